package client_test

import (
	"context"
	"fmt"
	"log"
	"maps"
	"slices"
	"strings"
	"time"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/client"
)

// Dial a plaintext cluster, write, read back and overwrite with the read's
// context. For TLS pass client.WithDialOptions(grpc.WithTransportCredentials(...))
// instead of client.Insecure().
func Example() {
	ctx := context.Background()
	c, err := client.Dial(ctx, []string{"127.0.0.1:7001"}, client.Insecure(), client.LocalDC("dc1"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Put(ctx, "default", []byte("greeting"), []byte("hello")); err != nil {
		log.Fatal(err)
	}
	res, err := c.Get(ctx, "default", []byte("greeting"), client.Level(kvv1.Level_LEVEL_QUORUM))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q from %s\n", res.Values, res.Node)
	_, err = c.Put(ctx, "default", []byte("greeting"), []byte("hi"), client.Context(res.Context), client.Durable(false))
	if err != nil {
		log.Fatal(err)
	}
}

// Add an element to a comma-separated set without losing concurrent adds.
func ExampleClient_Update() {
	ctx := context.Background()
	c, err := client.Dial(ctx, []string{"127.0.0.1:7001"}, client.Insecure())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	_, err = c.Update(ctx, "default", []byte("tags"), func(siblings [][]byte) ([]byte, error) {
		set := map[string]bool{"new-tag": true}
		for _, v := range siblings { // every concurrent version: merge them all
			for _, e := range strings.Split(string(v), ",") {
				if e != "" {
					set[e] = true
				}
			}
		}
		return []byte(strings.Join(slices.Sorted(maps.Keys(set)), ",")), nil
	}, client.Attempts(20), client.Timeout(2*time.Second))
	if err != nil {
		log.Fatal(err)
	}
}

// A hedged read: when the first replica has not answered within 20ms, the
// next one is asked too and the first answer wins.
func ExampleHedge() {
	ctx := context.Background()
	c, err := client.Dial(ctx, []string{"127.0.0.1:7001"}, client.Insecure())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	res, err := c.Get(ctx, "default", []byte("greeting"), client.Hedge(20*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(res.Values))
}

// Make your own retries idempotent: a node that has the write with this
// request ID does not apply it again (the package documentation says when
// a retry can still reach a replica before the first attempt did).
func ExampleRequestID() {
	ctx := context.Background()
	c, err := client.Dial(ctx, []string{"127.0.0.1:7001"}, client.Insecure())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	id := []byte("order-42-payment")
	for attempt := 0; attempt < 3; attempt++ {
		_, err = c.Put(ctx, "default", []byte("order:42"), []byte("paid"), client.RequestID(id), client.Timeout(time.Second))
		if err == nil {
			break
		}
	}
}
