// Package repair makes replicas converge: hinted handoff delivers the copies
// fallbacks held for unreachable replicas once those come back.
// (Merkle-tree anti-entropy and partition handoff join this package later.)
package repair

import (
	"context"
	"log/slog"
	"time"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	"github.com/meridiankv/meridian/replica"
)

// Writer sends a sibling set to a node (the coordinator's Peers has it).
type Writer interface {
	Write(ctx context.Context, node string, req *internalv1.WriteRequest) error
}

// Liveness says whether a node is up.
type Liveness interface {
	Alive(id string) bool
}

// Handoff delivers hints held by this node to their targets.
type Handoff struct {
	Store    *replica.Store
	Peers    Writer
	Live     Liveness
	Interval time.Duration // between delivery rounds (default 1s)
	Timeout  time.Duration // per delivery (default 5s)
	Logger   *slog.Logger
	// Delivered, when set, is told how many hints each round delivered.
	Delivered func(n int)
	// AfterRound, when set, runs after every delivery round.
	AfterRound func()
}

// Run delivers hints every Interval until ctx is done.
func (h *Handoff) Run(ctx context.Context) {
	iv := h.Interval
	if iv <= 0 {
		iv = time.Second
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := h.DeliverOnce(ctx)
			if err != nil && ctx.Err() == nil {
				h.logger().Warn("hinted handoff round failed", "err", err)
			}
			if h.Delivered != nil && n > 0 {
				h.Delivered(n)
			}
			if h.AfterRound != nil {
				h.AfterRound()
			}
		}
	}
}

func (h *Handoff) logger() *slog.Logger {
	if h.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Logger
}

// DeliverOnce sends every hint whose target is alive and deletes the
// delivered ones. It returns how many were delivered.
func (h *Handoff) DeliverOnce(ctx context.Context) (int, error) {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	var pending []replica.Hint
	err := h.Store.Hints("", func(hint replica.Hint) bool {
		if h.Live.Alive(hint.Target) {
			pending = append(pending, hint)
		}
		return len(pending) < 1024 && ctx.Err() == nil
	})
	if err != nil {
		return 0, err
	}
	delivered := 0
	for _, hint := range pending {
		wctx, cancel := context.WithTimeout(ctx, timeout)
		err := h.Peers.Write(wctx, hint.Target, &internalv1.WriteRequest{
			Keyspace: hint.Keyspace, Key: hint.Key, Set: hint.Set.Encode(), Sync: true,
		})
		cancel()
		if err != nil {
			h.logger().Debug("hint delivery failed", "target", hint.Target, "err", err)
			continue
		}
		if ok, err := h.Store.DeleteHint(hint); err != nil {
			return delivered, err
		} else if ok {
			delivered++
		}
	}
	if delivered > 0 {
		h.logger().Info("hinted handoff delivered", "hints", delivered)
	}
	return delivered, nil
}
