package replica

import (
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of Meridian's own
// statuses (as opposed to the transport's).
const ErrorDomain = "meridian.kv"

// ReasonRefused is the ErrorInfo reason with which a replica refuses one
// key's incoming set for what the set holds — a version written too far
// ahead of its clock, a merge past a hard limit — whoever sends it (a
// replica write, a hint, anti-entropy, a transfer). Nothing of it is
// stored and the sender keeps its copy; other keys are not affected, so
// senders of many keys skip it and go on.
const ReasonRefused = "KEY_REFUSED"

// Refuse returns the FAILED_PRECONDITION status, with ReasonRefused, of a
// set refused for the reason msg gives.
func Refuse(msg string) error {
	st := status.New(codes.FailedPrecondition, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: ReasonRefused, Domain: ErrorDomain}); err == nil {
		st = d
	}
	return st.Err()
}

// Refused reports whether err is Refuse's, itself or wrapped: one key
// refused, not the call or the peer (a FAILED_PRECONDITION without the
// reason, a stale route or another cluster, is not). An error joining
// several (errors.Join, as a round over many peers reports) is a refusal
// only when every one of them is: a peer down as well is more than a key
// refused.
func Refused(err error) bool {
	switch e := err.(type) {
	case nil:
		return false
	case interface{ GRPCStatus() *status.Status }:
		return refusal(e.GRPCStatus())
	case interface{ Unwrap() []error }:
		errs := e.Unwrap()
		for _, one := range errs {
			if !Refused(one) {
				return false
			}
		}
		return len(errs) > 0
	}
	return Refused(errors.Unwrap(err))
}

func refusal(st *status.Status) bool {
	if st.Code() != codes.FailedPrecondition {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain && info.GetReason() == ReasonRefused {
			return true
		}
	}
	return false
}
