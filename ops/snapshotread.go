package ops

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
)

// snapshotChunkBytes is the most file data one SnapshotChunk carries.
const snapshotChunkBytes = 1 << 20

// ReadSnapshot streams the files of a node's snapshot: this node's, or,
// when req.node names another member, that node's relayed through this
// one (the caller needs to reach one node only).
func (s *Server) ReadSnapshot(req *adminv1.ReadSnapshotRequest, stream adminv1.Admin_ReadSnapshotServer) error {
	if id := req.GetNode(); id != "" && id != s.n.ID() {
		return s.relaySnapshot(req, stream)
	}
	files, err := s.n.SnapshotFiles(req.GetName())
	if err != nil {
		return err
	}
	done, err := s.n.StartSnapshotRead()
	if err != nil {
		return err
	}
	var sent int64
	defer func() { done(sent) }()
	var total int64
	for _, f := range files {
		total += f.Size
	}
	first := true
	for _, f := range files {
		if err := sendSnapshotFile(stream, f.Path, f.Rel, func(c *adminv1.SnapshotChunk) {
			if first {
				c.TotalFiles, c.TotalBytes, first = int32(len(files)), total, false
			}
			sent += int64(len(c.Data))
		}); err != nil {
			return err
		}
	}
	return nil
}

// sendSnapshotFile sends one file in chunks, the last with its size and
// SHA-256; decorate sees every chunk before it is sent.
func sendSnapshotFile(stream adminv1.Admin_ReadSnapshotServer, path, rel string, decorate func(*adminv1.SnapshotChunk)) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return status.Errorf(codes.NotFound, "snapshot file %s is gone: the snapshot was deleted while it was being read (snapshot delete, or the schedule pruning it); list the snapshots and download one that is kept", rel)
	}
	if err != nil {
		return status.Errorf(codes.Internal, "read snapshot file %s: %v", rel, err)
	}
	defer f.Close()
	h := sha256.New()
	var off int64
	for {
		buf := make([]byte, snapshotChunkBytes) // a sent message is not reused
		k, err := io.ReadFull(f, buf)
		end := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
		if err != nil && !end {
			return status.Errorf(codes.Internal, "read snapshot file %s: %v", rel, err)
		}
		h.Write(buf[:k])
		c := &adminv1.SnapshotChunk{Path: rel, Offset: off, Data: buf[:k]}
		off += int64(k)
		if end {
			c.Last, c.Size, c.Sha256 = true, off, h.Sum(nil)
		}
		decorate(c)
		if err := stream.Send(c); err != nil {
			return err
		}
		if end {
			return nil
		}
	}
}

// relaySnapshot passes another node's snapshot stream on.
func (s *Server) relaySnapshot(req *adminv1.ReadSnapshotRequest, stream adminv1.Admin_ReadSnapshotServer) error {
	if _, ok := s.n.Topology().Nodes[req.GetNode()]; !ok {
		return status.Errorf(codes.NotFound, "node %q is not a member (meridian status lists them)", req.GetNode())
	}
	conn, err := s.n.PeerConn(req.GetNode())
	if err != nil {
		return status.Errorf(codes.Unavailable, "no connection to %s: %v", req.GetNode(), err)
	}
	from, err := adminv1.NewAdminClient(conn).ReadSnapshot(stream.Context(), &adminv1.ReadSnapshotRequest{Name: req.GetName()})
	if err != nil {
		return err
	}
	for {
		c, err := from.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(c); err != nil {
			return err
		}
	}
}

// SnapshotReceiver writes a ReadSnapshot stream into a directory, trusting
// nothing in it: every path must stay inside the directory and name a new
// file, chunks must follow each other, each file must match the size and
// SHA-256 its last chunk gives, and the whole must match the totals the
// first chunk announced (Finish).
type SnapshotReceiver struct {
	dir string
	// Files and Bytes written so far; TotalFiles and TotalBytes announced.
	Files, TotalFiles int
	Bytes, TotalBytes int64

	started bool
	cur     *os.File
	curPath string
	curOff  int64
	curHash hash.Hash
	seen    map[string]bool
}

// NewSnapshotReceiver writes into dir, which must exist and be empty.
func NewSnapshotReceiver(dir string) *SnapshotReceiver {
	return &SnapshotReceiver{dir: dir, seen: map[string]bool{}}
}

// Add writes one chunk.
func (r *SnapshotReceiver) Add(c *adminv1.SnapshotChunk) error {
	if !r.started {
		r.started = true
		if c.GetTotalFiles() <= 0 || c.GetTotalBytes() < 0 {
			return fmt.Errorf("the stream does not announce its files and bytes (%d, %d)", c.GetTotalFiles(), c.GetTotalBytes())
		}
		r.TotalFiles, r.TotalBytes = int(c.GetTotalFiles()), c.GetTotalBytes()
	}
	if r.cur == nil {
		if err := r.open(c.GetPath()); err != nil {
			return err
		}
	}
	if c.GetPath() != r.curPath || c.GetOffset() != r.curOff {
		return fmt.Errorf("chunk of %q at offset %d while %q is at %d: the stream is out of order", c.GetPath(), c.GetOffset(), r.curPath, r.curOff)
	}
	if r.Bytes+int64(len(c.GetData())) > r.TotalBytes {
		return fmt.Errorf("more than the %d bytes announced", r.TotalBytes)
	}
	if _, err := r.cur.Write(c.GetData()); err != nil {
		return err
	}
	r.curHash.Write(c.GetData())
	r.curOff += int64(len(c.GetData()))
	r.Bytes += int64(len(c.GetData()))
	if !c.GetLast() {
		return nil
	}
	if c.GetSize() != r.curOff {
		return fmt.Errorf("%s: %d bytes received, its size is %d", r.curPath, r.curOff, c.GetSize())
	}
	if sum := r.curHash.Sum(nil); !bytes.Equal(sum, c.GetSha256()) {
		return fmt.Errorf("%s: SHA-256 %x of what was received, the node's is %x", r.curPath, sum, c.GetSha256())
	}
	if err := r.closeCur(true); err != nil {
		return err
	}
	r.Files++
	return nil
}

func (r *SnapshotReceiver) open(p string) error {
	rel := filepath.FromSlash(p)
	if p == "" || !filepath.IsLocal(rel) {
		return fmt.Errorf("file path %q is not inside the snapshot", p)
	}
	if r.seen[p] {
		return fmt.Errorf("file %q sent twice", p)
	}
	if len(r.seen) >= r.TotalFiles {
		return fmt.Errorf("more than the %d files announced", r.TotalFiles)
	}
	r.seen[p] = true
	path := filepath.Join(r.dir, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	r.cur, r.curPath, r.curOff, r.curHash = f, p, 0, sha256.New()
	return nil
}

func (r *SnapshotReceiver) closeCur(sync bool) error {
	if r.cur == nil {
		return nil
	}
	var err error
	if sync {
		err = r.cur.Sync()
	}
	if cerr := r.cur.Close(); err == nil {
		err = cerr
	}
	r.cur = nil
	return err
}

// Finish checks that everything announced arrived whole.
func (r *SnapshotReceiver) Finish() error {
	if r.cur != nil {
		r.closeCur(false)
		return fmt.Errorf("the stream ended inside %s", r.curPath)
	}
	if !r.started || r.Files != r.TotalFiles || r.Bytes != r.TotalBytes {
		return fmt.Errorf("received %d of %d files, %d of %d bytes", r.Files, r.TotalFiles, r.Bytes, r.TotalBytes)
	}
	return nil
}

// Close releases an open file after an error.
func (r *SnapshotReceiver) Close() { r.closeCur(false) }
