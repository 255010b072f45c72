// Package membership knows who is in the cluster: gossip (hashicorp
// memberlist, SWIM with Lifeguard) for liveness, failure detection and node
// metadata, and Topology, one epoch of nodes, ring and keyspaces.
package membership

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/hashicorp/memberlist"
)

// MetaLimit is memberlist's cap on node metadata.
const MetaLimit = memberlist.MetaMaxSize

// Meta is what a node tells the cluster about itself; it rides on
// memberlist's node metadata.
type Meta struct {
	ID       string `json:"id"`
	GRPCAddr string `json:"grpc"`
	// PeerAddr is the node-to-node listener, AdminAddr the admin one.
	PeerAddr  string `json:"peer,omitempty"`
	AdminAddr string `json:"admin,omitempty"`
	// RaftAddr is the metadata log's listener.
	RaftAddr string `json:"raft,omitempty"`
	DC       string `json:"dc"`
	Rack     string `json:"rack"`
	Weight   int    `json:"w"`
	Epoch    uint64 `json:"e"`
	// ClusterID is the cluster ID from the metadata log, once the node
	// knows it ("" before): a member of another cluster is ignored.
	ClusterID string `json:"cid,omitempty"`
	// HintsFor lists the nodes this node holds undelivered hints for: a
	// replica listed by a live node has missed writes and does not count
	// toward a read quorum until they arrive. Read it through Hints:
	// when the names do not fit in the metadata (MetaLimit), it is sent
	// as HintsHashed, and when even that does not fit, as HintsAll.
	HintsFor []string `json:"h,omitempty"`
	// HintsHashed is HintsFor as a 16-bit hash of each name (hintHash),
	// big-endian, sorted, base64: about 2.7 bytes a target instead of the
	// name's length. A node whose hash collides with a target's counts as
	// owed hints too: a replica left out of a read quorum, never one
	// counted that should not be.
	HintsHashed string `json:"hh,omitempty"`
	// HintsAll says the node holds hints for more nodes than its metadata
	// can list: every other node counts as owed hints.
	HintsAll bool `json:"ha,omitempty"`
	// DiskLow is set while the node refuses writes of data for lack of
	// free disk space (min-free-disk); it serves reads.
	DiskLow bool `json:"dl,omitempty"`
	// Restored is the cluster whose snapshot this node's data was
	// restored from, while it waits for a cluster initialized from it
	// ("" otherwise): a new cluster's first leader without such data
	// hands it the leadership rather than starting the cluster afresh.
	Restored string `json:"rs,omitempty"`
	// Leaving is set by a node closing gracefully, just before it leaves
	// gossip: memberlist reports a leave as it does a death (its
	// events carry no state), so members tell the two apart by this flag
	// on the last metadata they heard. A left node is not re-joined by
	// the reconnect loop; a dead one is.
	Leaving bool `json:"lv,omitempty"`
}

// worstCase is m with the most its optional fields can take: a cluster
// ID (32 hex digits), the largest epoch, hints for more nodes than fit
// (HintsAll) and low disk. Restored (as long as a cluster ID) is never
// sent with a cluster ID: the node gossips it only until it knows one.
func (m Meta) worstCase() Meta {
	m.ClusterID, m.Epoch, m.DiskLow, m.Restored, m.Leaving = strings.Repeat("f", 32), math.MaxUint64, true, "", true
	m.HintsFor, m.HintsHashed, m.HintsAll = nil, "", true
	return m
}

// metaVersion prefixes the encoded metadata so the format can change.
const metaVersion = 1

// encode encodes m within MetaLimit. Hint targets whose names do not fit
// go as hashes, and if those do not fit either, as "all": never fewer
// than the node holds hints for, which would let a coordinator count a
// replica still owed writes toward a read quorum.
func (m Meta) encode() ([]byte, error) {
	b, err := m.encodeFull()
	if err == nil || len(m.HintsFor) == 0 {
		return b, err
	}
	hashed := m
	hashed.HintsFor, hashed.HintsHashed = nil, hashHints(m.HintsFor)
	if b, err := hashed.encodeFull(); err == nil {
		return b, nil
	}
	all := m
	all.HintsFor, all.HintsAll = nil, true
	return all.encodeFull()
}

// hintHash is the 16-bit hash of a node ID that HintsHashed carries.
func hintHash(id string) uint16 { return uint16(xxhash.Sum64String(id)) }

func hashHints(ids []string) string {
	hs := make([]uint16, 0, len(ids))
	for _, id := range ids {
		hs = append(hs, hintHash(id))
	}
	slices.Sort(hs)
	hs = slices.Compact(hs)
	b := make([]byte, 0, 2*len(hs))
	for _, h := range hs {
		b = binary.BigEndian.AppendUint16(b, h)
	}
	return base64.RawStdEncoding.EncodeToString(b)
}

// HintSet is what a member's metadata says of the nodes it holds hints
// for (Meta.Hints).
type HintSet struct {
	names  []string
	hashes []uint16 // sorted
	all    bool
}

// Hints reads the member's hint targets, in whichever form it sent them.
// Hashes that do not decode count as "all": a holder's claim is never
// read as less than it says.
func (m Meta) Hints() HintSet {
	s := HintSet{names: m.HintsFor, all: m.HintsAll}
	if m.HintsHashed != "" {
		b, err := base64.RawStdEncoding.DecodeString(m.HintsHashed)
		if err != nil || len(b)%2 != 0 {
			s.all = true
			return s
		}
		for i := 0; i < len(b); i += 2 {
			s.hashes = append(s.hashes, binary.BigEndian.Uint16(b[i:]))
		}
		slices.Sort(s.hashes)
	}
	return s
}

// Names lists the targets named outright (none when sent hashed or as all).
func (s HintSet) Names() []string { return s.names }

// Opaque reports whether the set is hashed or "all": a lookup (Owes) is
// needed instead of the names.
func (s HintSet) Opaque() bool { return s.all || len(s.hashes) > 0 }

// Owes reports whether the set may hold hints for id.
func (s HintSet) Owes(id string) bool {
	if s.all {
		return true
	}
	if len(s.hashes) > 0 {
		_, found := slices.BinarySearch(s.hashes, hintHash(id))
		return found
	}
	return slices.Contains(s.names, id)
}

func (m Meta) encodeFull() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	b = append([]byte{metaVersion}, b...)
	if len(b) > MetaLimit {
		return nil, fmt.Errorf("node metadata is %d bytes, over memberlist's %d-byte limit: shorten the ID, DC, rack or address", len(b), MetaLimit)
	}
	return b, nil
}

func decodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) < 2 || b[0] != metaVersion {
		return m, errors.New("unknown metadata format")
	}
	// memberlist caps only its own node's metadata: a member's can arrive
	// (push-pull) at any size, and its hint targets are walked on every
	// event under the liveness lock.
	if len(b) > MetaLimit {
		return m, fmt.Errorf("metadata of %d bytes, over the %d a member sends", len(b), MetaLimit)
	}
	err := json.Unmarshal(b[1:], &m)
	return m, err
}

// State is a member's liveness as gossip sees it.
type State int

const (
	StateAlive State = iota
	StateSuspect
	StateDead
	StateLeft
)

func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return "unknown"
}

func stateOf(s memberlist.NodeStateType) State {
	switch s {
	case memberlist.StateAlive:
		return StateAlive
	case memberlist.StateSuspect:
		return StateSuspect
	case memberlist.StateLeft:
		return StateLeft
	}
	return StateDead
}

// Member is one node as gossip sees it.
type Member struct {
	Meta       Meta
	State      State
	GossipAddr string
}

// Listener receives membership changes. It is called from memberlist's
// goroutines and must not block.
type Listener interface {
	MemberChanged(m Member)
}

// Config configures gossip. Validate names the wrong field.
type Config struct {
	Meta Meta
	// BindAddr is host:port to gossip on; port 0 picks a free port.
	BindAddr string
	// AdvertiseIP is the IP address published for a BindAddr bound to
	// every interface (0.0.0.0, ::, or no host), which other members
	// could not reach; ignored for a BindAddr naming a host.
	AdvertiseIP string
	// Seeds are gossip addresses to join (empty for the first node).
	Seeds []string
	// Profile is memberlist's timing profile: lan (default), wan, local, or
	// test (fast failure detection for tests on loopback).
	Profile string
	// Logger receives memberlist's log lines at debug level.
	Logger *slog.Logger
	// Transport replaces memberlist's network transport (tests). Either
	// way it is wrapped by the filter of SetFilter.
	Transport memberlist.Transport
	// Reconnect is how often a member seen dead is joined again (default
	// 10s; 500ms with the test profile; negative: never).
	Reconnect time.Duration
	// JoinRetry is the interval between join attempts (default 1s).
	JoinRetry time.Duration
	// Keys encrypt and authenticate gossip (AES-GCM; 16, 24 or 32 bytes):
	// the first encrypts, every key decrypts, so keys rotate without a
	// flap (see RotateKeys). Empty: plaintext gossip.
	Keys [][]byte
	// Label is the bootstrap label, sent with every gossip message until
	// the cluster ID is known ("meridian/<cluster name>"); messages with a
	// label this node does not accept are dropped, so one cluster cannot
	// join another by mistake (see labels in label.go).
	Label string
	// IsMember, when set, says whether an ID belongs to the cluster;
	// members claiming other IDs are ignored.
	IsMember func(id string) bool
	// ClusterID, when set, returns this node's cluster ID ("" while it is
	// not known). Once known, gossip is labelled with it, and only
	// messages with that label or the bootstrap label are taken; a member
	// whose metadata gossips another cluster ID is ignored, and forgotten
	// if it was listed.
	ClusterID func() string

	// Now is the wall clock whose offsets from the members' gossip
	// estimates (ClockAhead); default time.Now.
	Now func() time.Time

	// tune adjusts memberlist's configuration last (this package's tests).
	tune func(*memberlist.Config)
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Meta.ID == "" {
		return errors.New("gossip: Meta.ID is empty")
	}
	if _, _, err := net.SplitHostPort(c.BindAddr); err != nil {
		return fmt.Errorf("gossip: BindAddr %q is not host:port", c.BindAddr)
	}
	switch c.Profile {
	case "", "lan", "wan", "local", "test":
	default:
		return fmt.Errorf("gossip: profile %q: use lan, wan, local or test", c.Profile)
	}
	if _, err := c.Meta.encode(); err != nil {
		return fmt.Errorf("gossip: %w", err)
	}
	// The metadata grows later (a cluster ID, a larger epoch, hint
	// targets, low disk): a node whose metadata fits now but not then
	// would stop gossiping those, and peers would count a replica still
	// owed writes toward read quorums. Its worst case must fit now.
	if _, err := c.Meta.worstCase().encodeFull(); err != nil {
		return fmt.Errorf("gossip: with what it may carry later (cluster ID, hints, disk state): %w", err)
	}
	if len(c.Label) > memberlist.LabelMaxSize {
		return fmt.Errorf("gossip: label of %d bytes: at most %d", len(c.Label), memberlist.LabelMaxSize)
	}
	for _, k := range c.Keys {
		if n := len(k); n != 16 && n != 24 && n != 32 {
			return fmt.Errorf("gossip: a key of %d bytes: use 16, 24 or 32", n)
		}
	}
	return nil
}

func (c Config) memberlistConfig() *memberlist.Config {
	var mc *memberlist.Config
	switch c.Profile {
	case "wan":
		mc = memberlist.DefaultWANConfig()
	case "local":
		mc = memberlist.DefaultLocalConfig()
	case "test":
		mc = memberlist.DefaultLocalConfig()
		mc.ProbeInterval = 200 * time.Millisecond
		mc.ProbeTimeout = 100 * time.Millisecond
		mc.GossipInterval = 50 * time.Millisecond
		mc.SuspicionMult = 2
		mc.PushPullInterval = 2 * time.Second
		mc.TCPTimeout = 500 * time.Millisecond
	default:
		mc = memberlist.DefaultLANConfig()
	}
	return mc
}

// Gossip is a running memberlist instance.
type Gossip struct {
	ml        *memberlist.Memberlist
	isMember  func(id string) bool
	clusterID func() string
	labels    *labelTransport
	keyring   *memberlist.Keyring
	listener  Listener
	log       *slog.Logger
	retry     time.Duration
	addr      string
	self      string
	// filter, when set, drops messages to the nodes it names (SetFilter).
	filter atomic.Pointer[func(string) bool]
	now    func() time.Time
	clocks clockOffsets

	// notify serializes what the listener hears: memberlist's events
	// (record) and Recheck's replay, so that a replay of a member's last
	// state never lands after a newer event of it.
	notify sync.Mutex
	mu     struct {
		sync.RWMutex
		meta    Meta
		members map[string]Member
		byAddr  map[string]string // gossip address → node ID
		joined  bool
		// turnedAway holds copies of the live nodes record turned away
		// as not members (yet): Recheck looks at them again. Copies, as
		// memberlist's own Node structs change under its lock.
		turnedAway map[string]memberlist.Node
	}
	kick chan struct{} // Reconnect
	stop chan struct{}
	// stopDials cancels gossip's TCP dials in flight (Close).
	stopDials context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	// updating serializes memberlist's UpdateNode, which reads this
	// node's entry outside memberlist's lock while another update writes
	// it (a metadata update racing Close's leaving announcement).
	updating sync.Mutex
}

// Start creates the memberlist instance and, in the background, keeps
// trying to join the seeds until one answers or Close is called.
func Start(ctx context.Context, cfg Config, l Listener) (*Gossip, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.JoinRetry == 0 {
		cfg.JoinRetry = time.Second
	}
	if cfg.Reconnect == 0 {
		cfg.Reconnect = 10 * time.Second
		if cfg.Profile == "test" {
			cfg.Reconnect = 500 * time.Millisecond
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	g := &Gossip{listener: l, log: cfg.Logger, retry: cfg.JoinRetry, self: cfg.Meta.ID, now: cfg.Now, stop: make(chan struct{}), kick: make(chan struct{}, 1)}
	g.mu.meta = cfg.Meta
	g.mu.members = map[string]Member{}
	g.mu.turnedAway = map[string]memberlist.Node{}
	g.mu.byAddr = map[string]string{}
	host, portStr, _ := net.SplitHostPort(cfg.BindAddr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("gossip: port %q: %w", portStr, err)
	}
	mc := cfg.memberlistConfig()
	mc.Name = cfg.Meta.ID
	mc.BindAddr = host
	mc.BindPort = port
	mc.AdvertiseAddr = advertiseAddr(host, cfg.AdvertiseIP)
	mc.AdvertisePort = port
	mc.Delegate = (*delegate)(g)
	mc.Events = (*events)(g)
	mc.Ping = (*pingDelegate)(g)
	mc.Logger = log.New(logWriter{cfg.Logger}, "", 0)
	// A node restarting on the same address reclaims its name at once.
	mc.DeadNodeReclaimTime = time.Nanosecond
	if len(cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(cfg.Keys[1:], cfg.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip: keyring: %w", err)
		}
		mc.Keyring = kr
		g.keyring = kr
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	// Labels are applied by the transport (labelTransport), which can
	// change them once the cluster ID is known; memberlist's own label
	// stays empty, and its packets leave room for the header.
	mc.UDPBufferSize -= labelOverhead(cfg.Label)
	g.isMember = cfg.IsMember
	g.clusterID = cfg.ClusterID
	// memberlist dials from the default source address, so links between
	// nodes on one host cannot be cut by firewall rules: the transport is
	// wrapped instead (SetFilter).
	var (
		inner   memberlist.NodeAwareTransport
		dialCtx context.Context
	)
	switch t := cfg.Transport.(type) {
	case nil:
		nt, err := newNetTransport(host, port, mc.Logger)
		if err != nil {
			return nil, fmt.Errorf("gossip: listen on %s: %w", cfg.BindAddr, err)
		}
		if port == 0 {
			mc.BindPort, mc.AdvertisePort = nt.GetAutoBindPort(), nt.GetAutoBindPort()
		}
		inner = nt
		dialCtx, g.stopDials = context.WithCancel(context.Background())
	case memberlist.NodeAwareTransport:
		inner = t
	default:
		inner = nodeAware{t}
	}
	lt := newLabelTransport(&filterTransport{NodeAwareTransport: inner, g: g, dialCtx: dialCtx},
		&labels{bootstrap: cfg.Label, clusterID: cfg.ClusterID})
	g.labels = lt
	mc.Transport = lt
	if cfg.tune != nil {
		cfg.tune(mc)
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = lt.Shutdown() // memberlist shuts it down only on some errors; twice is harmless
		if g.stopDials != nil {
			g.stopDials()
		}
		return nil, fmt.Errorf("gossip: listen on %s: %w", cfg.BindAddr, err)
	}
	g.ml = ml
	self := ml.LocalNode()
	g.addr = net.JoinHostPort(self.Addr.String(), strconv.Itoa(int(self.Port)))
	if len(cfg.Seeds) == 0 {
		g.mu.joined = true
	} else {
		g.wg.Add(1)
		go g.joinLoop(cfg.Seeds)
	}
	if cfg.Reconnect > 0 {
		g.wg.Add(1)
		go g.reconnectLoop(cfg.Reconnect)
	}
	return g, nil
}

func (g *Gossip) joinLoop(seeds []string) {
	defer g.wg.Done()
	t := time.NewTicker(g.retry)
	defer t.Stop()
	for {
		if _, err := g.Join(seeds); err == nil {
			return
		}
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
	}
}

// Join contacts the given gossip addresses; it succeeds when one answers.
func (g *Gossip) Join(seeds []string) (int, error) {
	n, err := g.ml.Join(seeds)
	if err != nil && n == 0 {
		g.log.Debug("gossip join failed", "seeds", seeds, "err", err)
		return 0, err
	}
	g.mu.Lock()
	g.mu.joined = true
	g.mu.Unlock()
	return n, nil
}

// Joined reports whether the node reached a seed (or needed none).
func (g *Gossip) Joined() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.mu.joined
}

// Addr is the gossip address actually bound.
func (g *Gossip) Addr() string { return g.addr }

// advertiseAddr is the address memberlist publishes for bindHost: the
// bind host itself, or adv for a host that binds every interface (which
// names no reachable host).
func advertiseAddr(bindHost, adv string) string {
	if adv != "" && wildcardHost(bindHost) {
		return adv
	}
	return bindHost
}

// WildcardHost reports whether addr (host:port) binds every interface: no
// host, or an unspecified one (0.0.0.0, ::). Such an address names no
// host another machine can reach.
func WildcardHost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && wildcardHost(host)
}

func wildcardHost(host string) bool {
	ip := net.ParseIP(host)
	return host == "" || ip != nil && ip.IsUnspecified()
}

// Alive reports whether a node ID is currently alive (self always is).
func (g *Gossip) Alive(id string) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if id == g.mu.meta.ID {
		return true
	}
	m, ok := g.mu.members[id]
	return ok && m.State == StateAlive
}

// Members lists every known member including self, sorted by ID. It reads
// only this package's own table, filled from memberlist's events (reading
// memberlist's node structs outside its callbacks would race with it).
func (g *Gossip) Members() []Member {
	g.mu.RLock()
	out := make([]Member, 0, len(g.mu.members)+1)
	self := Member{Meta: g.mu.meta, State: StateAlive}
	for id, m := range g.mu.members {
		if id != self.Meta.ID {
			out = append(out, m)
		}
	}
	g.mu.RUnlock()
	if g.ml != nil {
		self.GossipAddr = g.Addr()
	}
	out = append(out, self)
	sort.Slice(out, func(i, j int) bool { return out[i].Meta.ID < out[j].Meta.ID })
	return out
}

// RotateKeys makes keys the gossip keyring, the first one primary, without
// dropping a message: it installs every new key, switches the primary, then
// removes keys no longer listed. Every node must hold a key before any
// node encrypts with it: add the new key (second) everywhere first, then
// make it first everywhere, then drop the old one.
func (g *Gossip) RotateKeys(keys [][]byte) error {
	kr := g.keyring
	if kr == nil {
		return errors.New("gossip: this node gossips in plaintext; restart it with keys")
	}
	if len(keys) == 0 {
		return errors.New("gossip: no key")
	}
	for _, k := range keys {
		if err := kr.AddKey(k); err != nil {
			return fmt.Errorf("gossip: add key: %w", err)
		}
	}
	if err := kr.UseKey(keys[0]); err != nil {
		return fmt.Errorf("gossip: use key: %w", err)
	}
	keep := map[string]bool{}
	for _, k := range keys {
		keep[string(k)] = true
	}
	for _, k := range kr.GetKeys() {
		if !keep[string(k)] {
			if err := kr.RemoveKey(k); err != nil {
				return fmt.Errorf("gossip: remove key: %w", err)
			}
		}
	}
	return nil
}

// UpdateMeta re-broadcasts this node's metadata.
func (g *Gossip) UpdateMeta(m Meta) error {
	if _, err := m.encode(); err != nil {
		return err
	}
	g.mu.Lock()
	// Once Close announced the leave, an update racing it keeps saying
	// so: the announcement is what members remember.
	m.Leaving = m.Leaving || g.mu.meta.Leaving
	g.mu.meta = m
	g.mu.Unlock()
	select {
	case <-g.stop:
		// Left the cluster: memberlist would wait its whole timeout for
		// a broadcast it never sends (holding up the node's Close).
		return ErrClosed
	default:
	}
	g.updating.Lock()
	defer g.updating.Unlock()
	return g.ml.UpdateNode(5 * time.Second)
}

// ErrClosed is UpdateMeta's answer once Close has begun.
var ErrClosed = errors.New("gossip: closed")

// Refused counts the gossip messages and streams refused for their label.
func (g *Gossip) Refused() uint64 { return g.labels.dropped.Load() }

// Close leaves the cluster gracefully and shuts gossip down. It is
// idempotent.
func (g *Gossip) Close() error {
	var err error
	g.closeOnce.Do(func() {
		if err := g.announceLeaving(); err != nil {
			g.log.Debug("gossip: announce leaving", "err", err)
		}
		close(g.stop)
		if g.stopDials != nil {
			g.stopDials()
		}
		g.wg.Wait()
		if lerr := g.leave(); lerr != nil {
			g.log.Debug("gossip leave", "err", lerr)
		}
		err = g.ml.Shutdown()
	})
	return err
}

// leave announces a graceful leave. memberlist v0.7.0's Leave dereferences
// this node's own entry before checking that it exists, and panics when
// the node is missing from its own member map (seen on a loaded CI
// machine, after peers had declared this node dead): leave only when the
// node lists itself, and turn a panic from inside memberlist into an
// error, so Close always shuts gossip down.
func (g *Gossip) leave() (err error) {
	present := false
	for _, n := range g.ml.Members() {
		if n.Name == g.self {
			present = true
			break
		}
	}
	if !present {
		return errors.New("this node is not in its own member list; leaving without a goodbye")
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("memberlist leave panicked: %v", r)
		}
	}()
	return g.ml.Leave(time.Second)
}

// leavingWait bounds how long Close waits for its "leaving" metadata to
// go out before the leave itself (which would replace it in memberlist's
// queue: both are news of this node). Members that missed it see the
// leave as a death, as before.
const leavingWait = time.Second

// announceLeaving gossips this node's metadata with Leaving set and waits
// (up to leavingWait) for it to go out. memberlist's UpdateNode, like its
// Leave, dereferences this node's own entry without checking it: only
// when the node lists itself, and a panic from inside is an error.
func (g *Gossip) announceLeaving() (err error) {
	if !slices.ContainsFunc(g.ml.Members(), func(n *memberlist.Node) bool { return n.Name == g.self }) {
		return errors.New("this node is not in its own member list")
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("memberlist update panicked: %v", r)
		}
	}()
	g.mu.Lock()
	g.mu.meta.Leaving = true
	g.mu.Unlock()
	g.updating.Lock()
	defer g.updating.Unlock()
	return g.ml.UpdateNode(leavingWait)
}

func memberOf(n *memberlist.Node) (Member, error) {
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		return Member{}, fmt.Errorf("node %s: %w", n.Name, err)
	}
	return Member{Meta: meta, State: stateOf(n.State), GossipAddr: n.Address()}, nil
}

// drop removes a member from the table, without telling the listener.
func (g *Gossip) drop(id string) {
	if id == g.self {
		return
	}
	g.mu.Lock()
	if old, ok := g.mu.members[id]; ok {
		delete(g.mu.members, id)
		delete(g.mu.byAddr, old.GossipAddr)
	}
	g.mu.Unlock()
	g.clocks.forget(id)
}

// ForgetExcept drops the members that member says left the cluster
// (removed nodes), without telling the listener: a removed node's last
// state (dead, or alive if it was stopped after its removal) would
// otherwise stay in Members, and in the members metric, for good.
func (g *Gossip) ForgetExcept(member func(id string) bool) {
	g.mu.RLock()
	var gone []string
	for id := range g.mu.members {
		if id != g.self && !member(id) {
			gone = append(gone, id)
		}
	}
	g.mu.RUnlock()
	for _, id := range gone {
		g.drop(id)
	}
}

// Recheck looks at every member again once what IsMember (or the
// listener) accepts may have changed — a new topology: members memberlist
// knows that the table turned away are recorded if they are members now,
// and the listener hears of every member of the table again. memberlist
// tells of a member only when its state or metadata changes, so one
// turned away (a joining node hears of the others before its metadata
// is agreed; a node restarted from a stale topology) would otherwise go
// unheard — its hint targets, low disk or death too — until it changes.
func (g *Gossip) Recheck() {
	if g.ml == nil {
		return
	}
	// Under notify: no event lands between the table read here and its
	// replay (a member dying meanwhile is replayed dead, or heard after).
	g.notify.Lock()
	defer g.notify.Unlock()
	g.mu.RLock()
	known := make([]Member, 0, len(g.mu.members))
	for id, m := range g.mu.members {
		if id != g.self {
			known = append(known, m)
		}
	}
	away := make([]memberlist.Node, 0, len(g.mu.turnedAway))
	for id, n := range g.mu.turnedAway {
		if _, ok := g.mu.members[id]; !ok {
			away = append(away, n)
		}
	}
	g.mu.RUnlock()
	for _, m := range known {
		if g.listener != nil && (g.isMember == nil || g.isMember(m.Meta.ID)) {
			g.listener.MemberChanged(m) // its last known state, as recorded
		}
	}
	for i := range away { // live, as last heard
		g.recordLocked(&away[i], false)
	}
}

// copyNode copies what record reads of a memberlist node, which memberlist
// changes under its own lock once its callback returns.
func copyNode(n *memberlist.Node) memberlist.Node {
	return memberlist.Node{Name: n.Name, Addr: slices.Clone(n.Addr), Port: n.Port, Meta: slices.Clone(n.Meta), State: n.State}
}

// forget drops a member listed earlier (it turned out to belong to another
// cluster) and tells the listener it left.
func (g *Gossip) forget(id string) {
	g.mu.Lock()
	old, ok := g.mu.members[id]
	if ok {
		delete(g.mu.members, id)
		delete(g.mu.byAddr, old.GossipAddr)
	}
	g.mu.Unlock()
	if ok && g.listener != nil {
		old.State = StateLeft
		g.listener.MemberChanged(old)
	}
}

// record updates the member table and tells the listener. memberlist does
// not keep Node.State current in its events (the state lives in its private
// nodeState), so the event kind decides: join and update mean alive, leave
// means dead — or left, when the node's last metadata said it was leaving
// (memberlist does not tell the two apart here).
func (g *Gossip) record(n *memberlist.Node, down bool) {
	g.notify.Lock()
	defer g.notify.Unlock()
	g.recordLocked(n, down)
}

// recordLocked is record, under g.notify.
func (g *Gossip) recordLocked(n *memberlist.Node, down bool) {
	g.mu.Lock()
	delete(g.mu.turnedAway, n.Name) // kept again below if turned away alive
	g.mu.Unlock()
	m, err := memberOf(n)
	if err == nil && m.Meta.ID != n.Name {
		g.log.Warn("ignoring gossip member whose metadata claims another node's ID", "member", n.Name, "claims", m.Meta.ID)
		return
	}
	if err == nil && g.isMember != nil && !g.isMember(n.Name) {
		g.log.Warn("ignoring gossip member that is not in the cluster's topology", "member", n.Name, "addr", n.Address())
		g.drop(n.Name) // a node removed since: its last state would stay
		if !down {
			g.mu.Lock()
			g.mu.turnedAway[n.Name] = copyNode(n)
			g.mu.Unlock()
		}
		return
	}
	if err == nil && g.clusterID != nil && m.Meta.ClusterID != "" {
		if mine := g.clusterID(); mine != "" && mine != m.Meta.ClusterID {
			g.log.Warn("ignoring gossip member of another cluster (same cluster name and gossip key, another cluster ID)", "member", n.Name, "addr", n.Address(), "cluster_id", m.Meta.ClusterID, "ours", mine)
			g.forget(m.Meta.ID)
			return
		}
	}
	if down {
		m.State = StateDead
		if n.State == memberlist.StateLeft || err == nil && m.Meta.Leaving {
			m.State = StateLeft
		}
		g.clocks.forget(n.Name)
	} else {
		m.State = StateAlive
	}
	if err != nil {
		g.log.Warn("ignoring gossip member with unreadable metadata", "member", n.Name, "err", err)
		return
	}
	g.mu.Lock()
	if old, ok := g.mu.members[m.Meta.ID]; ok && old.GossipAddr != m.GossipAddr {
		delete(g.mu.byAddr, old.GossipAddr)
	}
	g.mu.members[m.Meta.ID] = m
	g.mu.byAddr[m.GossipAddr] = m.Meta.ID
	g.mu.Unlock()
	if g.listener != nil {
		g.listener.MemberChanged(m)
	}
}

type delegate Gossip

func (d *delegate) NodeMeta(limit int) []byte {
	g := (*Gossip)(d)
	g.mu.RLock()
	b, err := g.mu.meta.encode()
	g.mu.RUnlock()
	if err != nil || len(b) > limit {
		g.log.Error("node metadata does not fit gossip", "err", err)
		return nil
	}
	return b
}
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

type events Gossip

func (e *events) NotifyJoin(n *memberlist.Node)   { (*Gossip)(e).record(n, false) }
func (e *events) NotifyLeave(n *memberlist.Node)  { (*Gossip)(e).record(n, true) }
func (e *events) NotifyUpdate(n *memberlist.Node) { (*Gossip)(e).record(n, false) }

// logWriter adapts memberlist's log.Logger output to slog at debug level.
type logWriter struct{ l *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.l.Debug("memberlist: " + string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

var _ io.Writer = logWriter{}
