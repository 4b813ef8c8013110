// Command wqproto measures the operation mix of the partitioned NATS queue
// design alone, before any callhook code is built on it: per delivery, an
// accept (event + delivery record, one atomic batch or two async publishes),
// a read by the partition's owner (an ordered consumer), and a finish (one
// async publish expecting the record's subject sequence: the fence).
//
//	go run ./bench/wqproto -server nats://127.0.0.1:4222 -replicas 3 -partitions 4 -d 10s
package main

import (
	"context"
	"flag"
	"fmt"
	"hash/fnv"
	"log"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	server := flag.String("server", natsgo.DefaultURL, "NATS URL")
	replicas := flag.Int("replicas", 1, "stream replicas")
	parts := flag.Int("partitions", 4, "partition streams")
	producers := flag.Int("producers", 16, "concurrent accepting clients")
	dur := flag.Duration("d", 10*time.Second, "run time")
	size := flag.Int("size", 300, "record bytes")
	flag.Parse()

	nc, err := natsgo.Connect(*server)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	for p := range *parts {
		name := fmt.Sprintf("WQPROTO_%d", p)
		_ = js.DeleteStream(ctx, name)
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: name, Subjects: []string{fmt.Sprintf("wqproto.%d.>", p)}, Storage: jetstream.FileStorage,
			Replicas: *replicas, MaxMsgsPerSubject: 1,
		}); err != nil {
			log.Fatal(err)
		}
	}
	body := make([]byte, *size)
	var accepted, finished, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Owners: one ordered consumer per partition reads every record once and
	// finishes it with one async publish fenced by the record's sequence.
	for p := range *parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := js.OrderedConsumer(ctx, fmt.Sprintf("WQPROTO_%d", p), jetstream.OrderedConsumerConfig{
				FilterSubjects: []string{fmt.Sprintf("wqproto.%d.d.>", p)}})
			if err != nil {
				log.Fatal(err)
			}
			it, err := c.Messages(jetstream.PullMaxMessages(1000))
			if err != nil {
				log.Fatal(err)
			}
			go func() { <-stop; it.Stop() }()
			for {
				m, err := it.Next()
				if err != nil {
					return
				}
				if m.Headers().Get("fin") != "" {
					continue
				}
				md, _ := m.Metadata()
				out := natsgo.NewMsg(m.Subject())
				out.Header.Set("fin", "1")
				out.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(md.Sequence.Stream, 10))
				out.Data = body
				f, err := js.PublishMsgAsync(out)
				if err != nil {
					failed.Add(1)
					continue
				}
				go func() {
					select {
					case <-f.Ok():
						finished.Add(1)
					case <-f.Err():
						failed.Add(1)
					}
				}()
			}
		}()
	}
	start := time.Now()
	for w := range *producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("%d-%d", w, n)
				h := fnv.New32a()
				h.Write([]byte(id))
				p := int(h.Sum32()) % *parts
				e := natsgo.NewMsg(fmt.Sprintf("wqproto.%d.e.%s", p, id))
				e.Data = body
				d := natsgo.NewMsg(fmt.Sprintf("wqproto.%d.d.%s", p, id))
				d.Data = body
				d.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
				f1, err1 := js.PublishMsgAsync(e)
				f2, err2 := js.PublishMsgAsync(d)
				if err1 != nil || err2 != nil {
					failed.Add(1)
					continue
				}
				// 202 = stored: the accepting client waits for both acks.
				select {
				case <-f1.Ok():
				case <-f1.Err():
					failed.Add(1)
					continue
				}
				select {
				case <-f2.Ok():
					accepted.Add(1)
				case <-f2.Err():
					failed.Add(1)
				}
			}
		}()
	}
	time.Sleep(*dur)
	a, f := accepted.Load(), finished.Load()
	el := time.Since(start).Seconds()
	close(stop)
	wg.Wait()
	fmt.Printf("replicas %d partitions %d producers %d: accepted %.0f/s finished %.0f/s (failed %d) = %.0f stored msgs/s\n",
		*replicas, *parts, *producers, float64(a)/el, float64(f)/el, failed.Load(), float64(2*a+f)/el)
	for p := range *parts {
		_ = js.DeleteStream(ctx, fmt.Sprintf("WQPROTO_%d", p))
	}
	os.Exit(0)
}
