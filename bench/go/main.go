// Command cometbft-bench measures CometBFT's own p2p connection stack (package
// github.com/cometbft/cometbft/p2p/conn, the version pinned in go.mod) over loopback TCP, so that
// cometmesh's figures for the same workloads can be put next to it (see ../compare.sh).
//
// Workloads (each prints `key value` lines on stdout):
//
//	secret_bulk      one SecretConnection, one direction: -bulk-mib MiB written in 64 KiB writes
//	mconn_64b        one MConnection over a SecretConnection, one channel: -small-msgs 64-byte messages
//	mconn_64kib      the same with -large-msgs 65536-byte messages
//	handshakes       -handshakes SecretConnection handshakes one after another, both ends in this
//	                 process: TCP connect and accept, then MakeSecretConnection on each end
//	idle_peer_rss    RSS growth of this process per idle peer (SecretConnection + MConnection),
//	                 with -peers peers dialled from a child process; also the time until all
//	                 are connected, handshakes/s while they arrive and CPU while idle
//
// MConnection runs with CometBFT's defaults except: send/recv rate limits lifted (the node's
// defaults, 5 MB/s from config.toml, would measure the limiter), send queue capacity 100
// messages, and no ping during the runs (the 60 s default never fires).
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/p2p/conn"
)

const chID = byte(0x01)

func main() {
	bulkMiB := flag.Int("bulk-mib", 256, "MiB sent through one SecretConnection")
	smallMsgs := flag.Int("small-msgs", 200000, "number of 64-byte messages")
	largeMsgs := flag.Int("large-msgs", 2048, "number of 64 KiB messages")
	peers := flag.Int("peers", 1000, "idle peers for the memory measurement")
	handshakes := flag.Int("handshakes", 2000, "number of handshakes")
	only := flag.String("only", "", "comma-separated workloads to run (default: all)")
	idleSecs := flag.Int("idle-seconds", 10, "idle_peer_rss: seconds over which idle CPU is measured")
	dialer := flag.String("dialer", "", "internal: dial this address -peers times and stay idle")
	flag.Parse()

	if *dialer != "" {
		if err := runDialer(*dialer, *peers); err != nil {
			fmt.Fprintln(os.Stderr, "dialer:", err)
			os.Exit(1)
		}
		return
	}

	want := func(name string) bool {
		if *only == "" {
			return true
		}
		for _, w := range strings.Split(*only, ",") {
			if w == name {
				return true
			}
		}
		return false
	}
	fmt.Printf("impl cometbft\n")
	fmt.Printf("go_version %s\n", runtime.Version())
	fmt.Printf("gomaxprocs %d\n", runtime.GOMAXPROCS(0))
	if want("secret_bulk") {
		check(benchSecretBulk(*bulkMiB))
	}
	if want("mconn_64b") {
		check(benchMConn("mconn_64b", 64, *smallMsgs))
	}
	if want("mconn_64kib") {
		check(benchMConn("mconn_64kib", 64*1024, *largeMsgs))
	}
	if want("handshakes") {
		check(benchHandshakes(*handshakes))
	}
	if want("idle_peer_rss") {
		check(benchIdlePeers(*peers, time.Duration(*idleSecs)*time.Second))
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// secretPair returns both ends of a SecretConnection over loopback TCP.
func secretPair() (*conn.SecretConnection, *conn.SecretConnection, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	type res struct {
		sc  *conn.SecretConnection
		err error
	}
	accepted := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- res{nil, err}
			return
		}
		sc, err := conn.MakeSecretConnection(c, ed25519.GenPrivKey())
		accepted <- res{sc, err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	dialed, err := conn.MakeSecretConnection(c, ed25519.GenPrivKey())
	if err != nil {
		return nil, nil, err
	}
	r := <-accepted
	if r.err != nil {
		return nil, nil, r.err
	}
	return dialed, r.sc, nil
}

// benchHandshakes runs n SecretConnection handshakes one after another over loopback TCP: the
// dialling end on this goroutine, the accepting end on another, each with its node key made
// once (as a node's), the ephemeral keys fresh per handshake (inside MakeSecretConnection).
func benchHandshakes(n int) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	dialKey, acceptKey := ed25519.GenPrivKey(), ed25519.GenPrivKey()
	errs := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			c, err := ln.Accept()
			if err != nil {
				errs <- err
				return
			}
			sc, err := conn.MakeSecretConnection(c, acceptKey)
			if err != nil {
				errs <- err
				return
			}
			_ = sc.Close()
		}
		errs <- nil
	}()
	start := time.Now()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		sc, err := conn.MakeSecretConnection(c, dialKey)
		if err != nil {
			return err
		}
		_ = sc.Close()
	}
	if err := <-errs; err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Printf("handshakes %d\n", n)
	fmt.Printf("handshakes_seconds %.3f\n", el.Seconds())
	fmt.Printf("handshakes_per_s %.0f\n", float64(n)/el.Seconds())
	return nil
}

func benchSecretBulk(mib int) error {
	a, b, err := secretPair()
	if err != nil {
		return err
	}
	defer a.Close()
	defer b.Close()
	total := int64(mib) << 20
	chunk := make([]byte, 64*1024)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	start := time.Now()
	werr := make(chan error, 1)
	go func() {
		var sent int64
		for sent < total {
			n, err := a.Write(chunk)
			if err != nil {
				werr <- err
				return
			}
			sent += int64(n)
		}
		werr <- nil
	}()
	buf := make([]byte, 64*1024)
	var got int64
	for got < total {
		n, err := b.Read(buf)
		if err != nil {
			return fmt.Errorf("secret read: %w", err)
		}
		got += int64(n)
	}
	el := time.Since(start)
	if err := <-werr; err != nil {
		return fmt.Errorf("secret write: %w", err)
	}
	fmt.Printf("secret_bulk_mib %d\n", mib)
	fmt.Printf("secret_bulk_seconds %.3f\n", el.Seconds())
	fmt.Printf("secret_bulk_mib_per_s %.1f\n", float64(mib)/el.Seconds())
	return nil
}

// newMConn builds an MConnection with a no-op logger (its channels need one set explicitly).
func newMConn(c net.Conn, descs []*conn.ChannelDescriptor, onReceive func(byte, []byte),
	onError func(interface{}), cfg conn.MConnConfig,
) *conn.MConnection {
	m := conn.NewMConnectionWithConfig(c, descs, onReceive, onError, cfg)
	m.SetLogger(log.NewNopLogger())
	return m
}

// idleConfig is mconnConfig with pings every 5 s (pong timeout 3 s), so that the idle-CPU
// window of idle_peer_rss sees pings; cometmesh's side uses the same intervals.
func idleConfig() conn.MConnConfig {
	cfg := mconnConfig()
	cfg.PingInterval = 5 * time.Second
	cfg.PongTimeout = 3 * time.Second
	return cfg
}

// cpuSeconds is the user + system CPU time this process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func mconnConfig() conn.MConnConfig {
	cfg := conn.DefaultMConnConfig()
	cfg.SendRate = 1 << 40
	cfg.RecvRate = 1 << 40
	return cfg
}

func chDescs() []*conn.ChannelDescriptor {
	return []*conn.ChannelDescriptor{{
		ID:                  chID,
		Priority:            1,
		SendQueueCapacity:   100,
		RecvBufferCapacity:  4096,
		RecvMessageCapacity: 1 << 21,
	}}
}

func benchMConn(name string, size, count int) error {
	a, b, err := secretPair()
	if err != nil {
		return err
	}
	var received atomic.Int64
	done := make(chan struct{})
	failed := make(chan error, 2)
	onErr := func(r interface{}) {
		select {
		case failed <- fmt.Errorf("mconn error: %v", r):
		default:
		}
	}
	recvCb := func(_ byte, msg []byte) {
		if len(msg) != size {
			onErr(fmt.Sprintf("got %d-byte message, want %d", len(msg), size))
			return
		}
		if received.Add(1) == int64(count) {
			close(done)
		}
	}
	sender := newMConn(a, chDescs(), func(byte, []byte) {}, onErr, mconnConfig())
	receiver := newMConn(b, chDescs(), recvCb, onErr, mconnConfig())
	if err := sender.Start(); err != nil {
		return err
	}
	if err := receiver.Start(); err != nil {
		return err
	}
	defer func() {
		_ = sender.Stop()
		_ = receiver.Stop()
	}()
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	start := time.Now()
	cpu0 := cpuSeconds()
	go func() {
		for i := 0; i < count; i++ {
			if !sender.Send(chID, msg) {
				onErr("send refused (queue full for 10 s or connection stopped)")
				return
			}
		}
	}()
	select {
	case <-done:
	case err := <-failed:
		return err
	case <-time.After(5 * time.Minute):
		return errors.New(name + ": timed out")
	}
	el := time.Since(start)
	cpu := cpuSeconds() - cpu0
	mib := float64(size) * float64(count) / (1 << 20)
	fmt.Printf("%s_msgs %d\n", name, count)
	fmt.Printf("%s_seconds %.3f\n", name, el.Seconds())
	fmt.Printf("%s_msgs_per_s %.0f\n", name, float64(count)/el.Seconds())
	fmt.Printf("%s_mib_per_s %.1f\n", name, mib/el.Seconds())
	// CPU of the whole process (both ends) per message: what the load of a shared machine
	// does not change as much as it changes the wall-clock rate.
	fmt.Printf("%s_cpu_us_per_msg %.3f\n", name, cpu*1e6/float64(count))
	return nil
}

// rssKiB reads this process's resident set size after a GC that returns freed memory to the OS.
func rssKiB() (int64, error) {
	runtime.GC()
	debug.FreeOSMemory()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				return strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	return 0, errors.New("no VmRSS in /proc/self/status")
}

// benchIdlePeers accepts -peers connections from a child process (this binary with -dialer), runs
// the SecretConnection handshake and an MConnection on each, and reports how much this process's
// RSS grew per idle peer. Only the accepting side is measured; the dialling ends live in the child.
// It also reports the time from starting the child until every peer's MConnection is up, the
// handshakes per second that makes, and the CPU this process uses over idle (pings only).
func benchIdlePeers(n int, idle time.Duration) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	// Warm up the code paths (and the allocator) with one pair first, so that the baseline
	// includes the one-time costs.
	a, b, err := secretPair()
	if err != nil {
		return err
	}
	ma := newMConn(a, chDescs(), func(byte, []byte) {}, func(interface{}) {}, mconnConfig())
	mb := newMConn(b, chDescs(), func(byte, []byte) {}, func(interface{}) {}, mconnConfig())
	_ = ma.Start()
	_ = mb.Start()
	_ = ma.Stop()
	_ = mb.Stop()
	time.Sleep(200 * time.Millisecond)
	before, err := rssKiB()
	if err != nil {
		return err
	}
	var msBefore runtime.MemStats
	runtime.ReadMemStats(&msBefore)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	connectStart := time.Now()
	child := exec.Command(self, "-dialer", ln.Addr().String(), "-peers", strconv.Itoa(n))
	child.Stderr = os.Stderr
	childOut, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return err
	}
	defer func() {
		_ = child.Process.Kill()
		_ = child.Wait()
	}()
	var mu sync.Mutex
	var conns []*conn.MConnection
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc, err := conn.MakeSecretConnection(c, ed25519.GenPrivKey())
			if err != nil {
				errs <- err
				return
			}
			m := newMConn(sc, chDescs(), func(byte, []byte) {}, func(interface{}) {}, idleConfig())
			if err := m.Start(); err != nil {
				errs <- err
				return
			}
			mu.Lock()
			conns = append(conns, m)
			mu.Unlock()
		}()
	}
	wg.Wait()
	connectSecs := time.Since(connectStart).Seconds()
	close(errs)
	for err := range errs {
		return err
	}
	// Wait for the child to report that all its ends are up, then let things settle.
	line, err := bufio.NewReader(childOut).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		return fmt.Errorf("dialer did not get ready: %q %v", line, err)
	}
	time.Sleep(2 * time.Second)
	after, err := rssKiB()
	if err != nil {
		return err
	}
	cpu0, t0 := cpuSeconds(), time.Now()
	time.Sleep(idle)
	idleCPU := (cpuSeconds() - cpu0) / time.Since(t0).Seconds() * 100
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapPerPeer := (float64(ms.HeapInuse) - float64(msBefore.HeapInuse)) / float64(len(conns)) / 1024
	stackPerPeer := (float64(ms.StackInuse) - float64(msBefore.StackInuse)) / float64(len(conns)) / 1024
	fmt.Printf("idle_peers %d\n", len(conns))
	fmt.Printf("idle_rss_before_kib %d\n", before)
	fmt.Printf("idle_rss_after_kib %d\n", after)
	fmt.Printf("idle_peer_rss_kib %.1f\n", float64(after-before)/float64(len(conns)))
	fmt.Printf("idle_connect_seconds %.2f\n", connectSecs)
	fmt.Printf("idle_arrival_handshakes_per_s %.0f\n", float64(n)/connectSecs)
	fmt.Printf("idle_cpu_percent %.2f\n", idleCPU)
	fmt.Printf("idle_peer_go_heap_inuse_kib %.1f\n", heapPerPeer)
	fmt.Printf("idle_peer_go_stack_inuse_kib %.1f\n", stackPerPeer)
	fmt.Printf("idle_goroutines %d\n", runtime.NumGoroutine())
	for _, m := range conns {
		_ = m.Stop()
	}
	return nil
}

// runDialer is the child side of benchIdlePeers.
func runDialer(addr string, n int) error {
	conns := make([]*conn.MConnection, 0, n)
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		sc, err := conn.MakeSecretConnection(c, ed25519.GenPrivKey())
		if err != nil {
			return err
		}
		m := newMConn(sc, chDescs(), func(byte, []byte) {}, func(interface{}) {}, idleConfig())
		if err := m.Start(); err != nil {
			return err
		}
		conns = append(conns, m)
	}
	fmt.Println("ready")
	// Stay idle until the parent kills us (or closes our stdout).
	_, _ = io.Copy(io.Discard, os.Stdin)
	select {}
}
