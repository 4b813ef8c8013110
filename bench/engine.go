package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// engineRate measures the engine itself on the servers S1nats used, in the
// same run: 16 publishers (async, each with up to 256 acks outstanding)
// and 4 pull consumers on one durable consumer acking every message, 300 B
// messages, file storage, the same replicas, for dur. It returns consumed
// and acked messages per second: the rate a queue built on JetStream could
// at best deliver at (one stored message per delivery).
func engineRate(urls string, replicas int, dur time.Duration) (float64, error) {
	nc, err := natsgo.Connect(urls)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), dur+time.Minute)
	defer cancel()
	const name = "BENCHENGINE"
	_ = js.DeleteStream(ctx, name)
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{"benchengine.>"},
		Storage: jetstream.FileStorage, Replicas: replicas})
	if err != nil {
		return 0, fmt.Errorf("engine stream: %w", err)
	}
	defer func() { _ = js.DeleteStream(context.Background(), name) }()
	c, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "w", AckPolicy: jetstream.AckExplicitPolicy,
		MaxAckPending: 20000})
	if err != nil {
		return 0, fmt.Errorf("engine consumer: %w", err)
	}
	payload := make([]byte, 300)
	var acked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		it, err := c.Messages(jetstream.PullMaxMessages(500))
		if err != nil {
			return 0, err
		}
		wg.Go(func() {
			go func() { <-stop; it.Stop() }()
			for {
				m, err := it.Next()
				if err != nil {
					return
				}
				if m.Ack() == nil {
					acked.Add(1)
				}
			}
		})
	}
	for p := range 16 {
		wg.Go(func() {
			pjs, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := pjs.PublishAsync(fmt.Sprintf("benchengine.%d", p), payload); err != nil {
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	time.Sleep(2 * time.Second) // warm up
	start, n0 := time.Now(), acked.Load()
	time.Sleep(dur)
	rate := float64(acked.Load()-n0) / time.Since(start).Seconds()
	close(stop)
	wg.Wait()
	return rate, nil
}
