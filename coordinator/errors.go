package coordinator

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// ErrorDomain marks statuses produced by Meridian's request path (as opposed
// to the transport), in a google.rpc.ErrorInfo detail.
const ErrorDomain = replica.ErrorDomain

// withInfo attaches a machine-readable ErrorInfo (reason + counts).
func withInfo(st *status.Status, reason string, md map[string]string) *status.Status {
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: md}); err == nil {
		return d
	}
	return st
}

// ReasonDiskLow is the ErrorInfo reason of a node refusing a write for lack
// of free disk space (RESOURCE_EXHAUSTED, before anything is written).
const ReasonDiskLow = "DISK_LOW"

// ReasonReplicasPending is the ErrorInfo reason of a LOCAL_* request in a
// DC whose replicas of the key are being added (UNAVAILABLE from every
// node until its partition switches: retry later, or use QUORUM).
const ReasonReplicasPending = "REPLICAS_PENDING"

// ReasonHintRefused is the ErrorInfo reason of a fallback refusing to keep
// a hint (a bound of its hint log reached, or hints off):
// RESOURCE_EXHAUSTED, nothing stored, so the sender may try another.
const ReasonHintRefused = "HINT_REFUSED"

// HintRefusedError is a hint log's refusal (see Hints), carried to the
// sender as RESOURCE_EXHAUSTED with ReasonHintRefused. Window says the
// target has been owed hints past the hint window (ErrorInfo metadata
// bound=window): the sender hands the hint to no other fallback, which
// would start the window again; a refusal for room it does.
type HintRefusedError struct {
	Err    error
	Window bool
}

func (e *HintRefusedError) Error() string { return "hint not kept: " + e.Err.Error() }
func (e *HintRefusedError) Unwrap() error { return e.Err }

// GRPCStatus maps the error to RESOURCE_EXHAUSTED.
func (e *HintRefusedError) GRPCStatus() *status.Status {
	var md map[string]string
	if e.Window {
		md = map[string]string{"bound": "window"}
	}
	return withInfo(status.New(codes.ResourceExhausted, e.Error()), ReasonHintRefused, md)
}

// overHintWindow reports whether err is a fallback's refusal of a hint
// for a target owed hints past the hint window.
func overHintWindow(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.ResourceExhausted {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain && info.GetReason() == ReasonHintRefused {
			return info.GetMetadata()["bound"] == "window"
		}
	}
	return false
}

// ReasonClockAhead is the ErrorInfo reason of a node refusing to
// coordinate a last-writer-wins write because its clock runs ahead of its
// peers' (UNAVAILABLE, nothing written): another node may take it.
const ReasonClockAhead = "CLOCK_AHEAD"

// ClockAheadError is that refusal; Detail says why no other replica took
// the write, when this node tried them.
type ClockAheadError struct {
	Ahead, Limit time.Duration
	Detail       string
}

func (e *ClockAheadError) Error() string {
	msg := fmt.Sprintf("this node's clock runs %v ahead of its peers' (more than %v): it coordinates no last-writer-wins write, whose timestamp would win over the writes made until real time passed it; fix its clock (check NTP), or send the write to another node",
		e.Ahead.Round(time.Millisecond), e.Limit)
	if e.Detail != "" {
		msg += " (" + e.Detail + ")"
	}
	return msg
}

// GRPCStatus maps the error to UNAVAILABLE with ReasonClockAhead.
func (e *ClockAheadError) GRPCStatus() *status.Status {
	return withInfo(status.New(codes.Unavailable, e.Error()), ReasonClockAhead,
		map[string]string{"ahead_ms": strconv.FormatInt(e.Ahead.Milliseconds(), 10)})
}

// HasReason reports whether st carries Meridian's ErrorInfo with reason.
func HasReason(st *status.Status, reason string) bool {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain && info.GetReason() == reason {
			return true
		}
	}
	return false
}

// IsMeridianStatus reports whether a status came from a Meridian
// coordinator rather than from the network.
func IsMeridianStatus(st *status.Status) bool {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return true
		}
	}
	return false
}

func itoa(i int) string { return strconv.Itoa(i) }

// Errors carry their gRPC status (GRPCStatus), so the API edge returns them
// unchanged and clients see a code plus a message that says what to do.

// InvalidError is a request the caller must change: INVALID_ARGUMENT.
type InvalidError struct{ Msg string }

func (e *InvalidError) Error() string { return e.Msg }

// GRPCStatus maps the error to INVALID_ARGUMENT.
func (e *InvalidError) GRPCStatus() *status.Status {
	return status.New(codes.InvalidArgument, e.Msg)
}

func invalidf(format string, args ...any) error {
	return &InvalidError{Msg: fmt.Sprintf(format, args...)}
}

// NotFoundError names a keyspace that does not exist: NOT_FOUND.
type NotFoundError struct{ Keyspace string }

func (e *NotFoundError) Error() string {
	if len(e.Keyspace) > maxKeyspaceName {
		// No keyspace has such a name; the caller chose its size, so it
		// is not echoed (into replies, logs and spans).
		return fmt.Sprintf("keyspace %.64q... (%d bytes) does not exist: names have at most %d characters; list them with 'meridian keyspace list'", e.Keyspace, len(e.Keyspace), maxKeyspaceName)
	}
	return fmt.Sprintf("keyspace %q does not exist: create it with 'meridian keyspace create %s --replication DC=RF' or list them with 'meridian keyspace list'", e.Keyspace, e.Keyspace)
}

// maxKeyspaceName is the longest keyspace name (membership's rule).
const maxKeyspaceName = 64

// GRPCStatus maps the error to NOT_FOUND.
func (e *NotFoundError) GRPCStatus() *status.Status {
	return status.New(codes.NotFound, e.Error())
}

// UnavailableError says too few replicas were alive to even try: UNAVAILABLE.
type UnavailableError struct {
	Op    Op
	Need  Need
	Alive int
	// LowOnDisk lists the replicas up but refusing writes for lack of
	// disk space (not counted in Alive).
	LowOnDisk []string
	Detail    string
}

func (e *UnavailableError) Error() string {
	msg := fmt.Sprintf("%s at %s needs %d replicas but only %d of N=%d are alive", e.Op, describe(e.Need), e.Need.Count(), e.Alive, e.Need.N)
	todo := "retry later or use a lower consistency level"
	if low := strings.Join(e.LowOnDisk, ", "); low != "" {
		msg += fmt.Sprintf(" and accepting writes; %d more low on disk (%s)", len(e.LowOnDisk), low)
		todo = "free disk space on " + low + ", " + todo
	}
	if e.Detail != "" {
		msg += " (" + e.Detail + ")"
	}
	return msg + ": " + todo
}

// GRPCStatus maps the error to UNAVAILABLE.
func (e *UnavailableError) GRPCStatus() *status.Status {
	md := map[string]string{"needed": itoa(e.Need.Count()), "alive": itoa(e.Alive), "n": itoa(e.Need.N)}
	if len(e.LowOnDisk) > 0 {
		md["low_on_disk"] = itoa(len(e.LowOnDisk))
	}
	return withInfo(status.New(codes.Unavailable, e.Error()), "REPLICAS_UNAVAILABLE", md)
}

// FailedError says replicas were asked but too few succeeded: UNAVAILABLE.
type FailedError struct {
	Op       Op
	Need     Need
	Answered int
	Failed   int
	Asked    int
	// Short names the datacenters that fell short, for per-DC levels.
	Short string
	Cause error
}

func (e *FailedError) Error() string {
	msg := fmt.Sprintf("%s at %s needed %d replicas but %d of the %d asked failed, so it cannot succeed (%d answered before giving up)",
		e.Op, describe(e.Need), e.Need.Count(), e.Failed, e.Asked, e.Answered)
	if e.Short != "" {
		msg += " (" + e.Short + ")"
	}
	if e.Cause != nil {
		msg += "; last error: " + e.Cause.Error()
	}
	return msg
}

// GRPCStatus maps the error to UNAVAILABLE.
func (e *FailedError) GRPCStatus() *status.Status {
	return withInfo(status.New(codes.Unavailable, e.Error()), "QUORUM_FAILED",
		map[string]string{"needed": itoa(e.Need.Count()), "answered": itoa(e.Answered), "failed": itoa(e.Failed), "asked": itoa(e.Asked)})
}

func (e *FailedError) Unwrap() error { return e.Cause }

// TimeoutError says the deadline passed before enough replicas answered:
// DEADLINE_EXCEEDED.
type TimeoutError struct {
	Op       Op
	Need     Need
	Answered int
	Asked    int
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("%s at %s: deadline exceeded after %d of %d replicas answered (needed %d): raise the deadline or lower the level",
		e.Op, describe(e.Need), e.Answered, e.Asked, e.Need.Count())
}

// GRPCStatus maps the error to DEADLINE_EXCEEDED.
func (e *TimeoutError) GRPCStatus() *status.Status {
	return withInfo(status.New(codes.DeadlineExceeded, e.Error()), "QUORUM_TIMEOUT",
		map[string]string{"needed": itoa(e.Need.Count()), "answered": itoa(e.Answered), "asked": itoa(e.Asked)})
}

func describe(n Need) string {
	if n.Level == 0 {
		return fmt.Sprintf("explicit quorum %d", n.Total)
	}
	return levelName(n.Level)
}

// IsClientError reports whether err is the caller's fault (bad request).
func IsClientError(err error) bool {
	var inv *InvalidError
	var nf *NotFoundError
	return errors.As(err, &inv) || errors.As(err, &nf)
}

// LimitError is a write that would leave a key over its keyspace's limits
// (too many siblings, too many bytes): FAILED_PRECONDITION, nothing stored.
type LimitError struct {
	Keyspace string
	Key      []byte
	Err      error
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("write refused: %v (keyspace %q): read the key, merge its values and write the result with the context the read returned; every write without a context adds a sibling", e.Err, e.Keyspace)
}

func (e *LimitError) Unwrap() error { return e.Err }

// GRPCStatus maps the error to FAILED_PRECONDITION with the counts.
func (e *LimitError) GRPCStatus() *status.Status {
	md := map[string]string{"keyspace": e.Keyspace}
	var le *version.LimitError
	if errors.As(e.Err, &le) {
		md["siblings"], md["max_siblings"] = itoa(le.Siblings), itoa(le.MaxSiblings)
		md["bytes"], md["max_bytes"] = itoa(le.Bytes), itoa(le.MaxBytes)
	}
	return withInfo(status.New(codes.FailedPrecondition, e.Error()), "KEY_LIMIT", md)
}

// ReasonStaleRoute is the ErrorInfo reason of a replica request refused
// because it was routed by a ring older than the partition's last change;
// its metadata "route_epoch" is the epoch of that change.
const ReasonStaleRoute = "STALE_ROUTE"

// StaleRouteError is the refusal a replica sends for a stale route.
func StaleRouteError(msg string, routeEpoch uint64) error {
	st := status.New(codes.FailedPrecondition, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: ReasonStaleRoute, Domain: ErrorDomain,
		Metadata: map[string]string{"route_epoch": strconv.FormatUint(routeEpoch, 10)}}); err == nil {
		st = d
	}
	return st.Err()
}

// StaleRoute reports whether err (or an error it wraps) is a stale-route
// refusal, and the epoch the sender must reach.
func StaleRoute(err error) (uint64, bool) {
	for e := err; e != nil; e = errors.Unwrap(e) {
		st, ok := status.FromError(e)
		if !ok {
			continue
		}
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == ReasonStaleRoute {
				v, perr := strconv.ParseUint(info.GetMetadata()["route_epoch"], 10, 64)
				return v, perr == nil
			}
		}
	}
	return 0, false
}
