package node_test

import (
	"crypto/rand"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/node"
)

// TestHostileClients: a 100 MiB message, a flood of idle connections past
// the cap, and connections sending garbage are each refused; the node stays
// healthy and a client that was already connected keeps being served.
func TestHostileClients(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Engine: "memory", Configure: func(c *node.Config) {
		c.MaxConnections = 100
		c.ConnectionTimeout = time.Second
	}})
	n := l.Nodes()[0]
	ctx := ctxT(t)
	healthy := kvv1.NewKVClient(dialConn(t, n.Addr()))
	if _, err := healthy.Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}

	// A message far over the client listener's limit.
	big := make([]byte, 100<<20)
	_, err := healthy.Put(ctx, &kvv1.PutRequest{Key: []byte("big"), Value: big}, grpc.MaxCallSendMsgSize(200<<20))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("100 MiB put: %v, want RESOURCE_EXHAUSTED", err)
	}

	// Idle connections past the cap are closed at once.
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 300; i++ {
		c, err := net.Dial("tcp", n.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	closed := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF {
			closed++
		}
	}
	if closed < 200 {
		t.Fatalf("only %d of 300 idle connections refused with a cap of 100", closed)
	}

	// Garbage instead of HTTP/2.
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", n.Addr())
			if err != nil {
				return
			}
			defer c.Close()
			junk := make([]byte, 64<<10)
			rand.Read(junk)
			c.SetWriteDeadline(time.Now().Add(2 * time.Second))
			c.Write(junk)
		}()
	}
	wg.Wait()

	// The established client is still served throughout.
	if get, err := healthy.Get(ctx, &kvv1.GetRequest{Key: []byte("k")}); err != nil || len(get.Siblings) != 1 {
		t.Fatalf("healthy client after the abuse: %v, %v", get, err)
	}
	// Once the idle connections time out or go, new clients get in again.
	for _, c := range conns {
		c.Close()
	}
	eventually(t, "a new client to connect", func() bool {
		_, err := kvv1.NewKVClient(dialConn(t, n.Addr())).Get(ctx, &kvv1.GetRequest{Key: []byte("k")})
		return err == nil
	})
	if st := n.Connections()["client"]; st[1] < 200 {
		t.Fatalf("refused connections counted: %d", st[1])
	}
}
