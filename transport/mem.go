package transport

import (
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
)

// Handler is what a node serves to its peers.
type Handler interface {
	ServeRead(ctx context.Context, req *internalv1.ReadRequest) (*internalv1.ReadResponse, error)
	ServeWrite(ctx context.Context, req *internalv1.WriteRequest) (*internalv1.WriteResponse, error)
	ServeCoordinate(ctx context.Context, req *internalv1.CoordinateRequest) (*internalv1.CoordinateResponse, error)
}

// Mem is an in-process transport: every node registers its Handler and
// calls reach it directly, with no network. Messages are not copied, so
// handlers must not modify requests.
type Mem struct {
	mu       sync.RWMutex
	handlers map[string]Handler
}

// NewMem returns an empty in-memory network.
func NewMem() *Mem { return &Mem{handlers: map[string]Handler{}} }

// Register attaches a node's handler; nil detaches it (the node is gone).
func (m *Mem) Register(node string, h Handler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h == nil {
		delete(m.handlers, node)
		return
	}
	m.handlers[node] = h
}

func (m *Mem) handler(node string) (Handler, error) {
	m.mu.RLock()
	h, ok := m.handlers[node]
	m.mu.RUnlock()
	if !ok {
		return nil, status.Errorf(codes.Unavailable, "node %s is not on the in-memory network", node)
	}
	return h, nil
}

// Read calls the node's ServeRead.
func (m *Mem) Read(ctx context.Context, node string, req *internalv1.ReadRequest) (*internalv1.ReadResponse, error) {
	h, err := m.handler(node)
	if err != nil {
		return nil, err
	}
	resp, err := h.ServeRead(ctx, req)
	if err != nil {
		return nil, err
	}
	// Over a network a reply is the caller's own copy, and callers decode
	// it sharing its bytes; ServeRead may hand out the row cache's.
	return proto.Clone(resp).(*internalv1.ReadResponse), nil
}

// Write calls the node's ServeWrite.
func (m *Mem) Write(ctx context.Context, node string, req *internalv1.WriteRequest) error {
	h, err := m.handler(node)
	if err != nil {
		return err
	}
	_, err = h.ServeWrite(ctx, req)
	return err
}

// Coordinate calls the node's ServeCoordinate.
func (m *Mem) Coordinate(ctx context.Context, node string, req *internalv1.CoordinateRequest) (*internalv1.CoordinateResponse, error) {
	h, err := m.handler(node)
	if err != nil {
		return nil, err
	}
	return h.ServeCoordinate(ctx, req)
}
