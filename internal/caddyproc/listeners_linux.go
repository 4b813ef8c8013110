package caddyproc

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// listener is one listening TCP socket of this network namespace.
type listener struct {
	ip    net.IP
	port  int
	inode string
}

func (l listener) String() string { return net.JoinHostPort(l.ip.String(), strconv.Itoa(l.port)) }

// CheckListeners returns an error unless every socket listening on one of
// ports belongs to the process pid, and pid listens on loopback addresses
// only. A harness calls it once its process listens: it proves that the
// admin endpoint it is about to talk to is its own child's (not a Caddy
// someone left running on that port), and that a test Caddy is not
// reachable from the network.
func CheckListeners(pid int, ports ...int) error {
	all, err := listeners()
	if err != nil {
		return fmt.Errorf("listing listening sockets: %v", err)
	}
	own, err := socketInodes(pid)
	if err != nil {
		return fmt.Errorf("listing the sockets of pid %d: %v", pid, err)
	}
	want := map[int]bool{}
	for _, p := range ports {
		want[p] = true
	}
	found := map[int]bool{}
	for _, l := range all {
		switch {
		case own[l.inode] && !l.ip.IsLoopback():
			return fmt.Errorf("pid %d listens on %s, which is reachable from the network: a test server must bind 127.0.0.1 (Caddyfile: default_bind 127.0.0.1)", pid, l)
		case want[l.port] && !own[l.inode]:
			return fmt.Errorf("%s is listened on by another process than pid %d: a server this harness did not start holds the port (stop it, or let the harness pick free ports)", l, pid)
		case want[l.port]:
			found[l.port] = true
		}
	}
	for _, p := range ports {
		if !found[p] {
			return fmt.Errorf("pid %d does not listen on port %d", pid, p)
		}
	}
	return nil
}

// listeners lists the listening TCP sockets in /proc/net/tcp and tcp6.
func listeners() ([]listener, error) {
	var out []listener
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if os.IsNotExist(err) && name == "/proc/net/tcp6" {
			continue // no IPv6
		}
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			// sl local_address rem_address st ... uid timeout inode
			f := strings.Fields(sc.Text())
			if len(f) < 10 || f[3] != "0A" { // 0A is TCP_LISTEN
				continue
			}
			l, err := parseListener(f[1], f[9])
			if err != nil {
				return nil, fmt.Errorf("%s: %v", name, err)
			}
			out = append(out, l)
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// parseListener reads a local address of /proc/net/tcp ("0100007F:1F90":
// the address as 32-bit words in host byte order, the port in hex).
func parseListener(local, inode string) (listener, error) {
	addr, port, ok := strings.Cut(local, ":")
	raw, err := hex.DecodeString(addr)
	if !ok || err != nil || (len(raw) != 4 && len(raw) != 16) {
		return listener{}, fmt.Errorf("bad local address %q", local)
	}
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(raw[i:], binary.NativeEndian.Uint32(raw[i:]))
	}
	p, err := strconv.ParseUint(port, 16, 16)
	if err != nil {
		return listener{}, fmt.Errorf("bad port in %q", local)
	}
	return listener{ip: net.IP(raw), port: int(p), inode: inode}, nil
}

// socketInodes is the set of socket inodes among pid's open files.
func socketInodes(pid int) (map[string]bool, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, e := range ents {
		target, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue // closed since ReadDir
		}
		if inode, ok := strings.CutPrefix(target, "socket:["); ok {
			out[strings.TrimSuffix(inode, "]")] = true
		}
	}
	return out, nil
}
