package likeness

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// RequestIDKey is the trailing metadata key of the server's request id.
const RequestIDKey = "x-request-id"

// Error is a failed call, with the google.rpc details the server attached to it (the grpc-status-details-bin
// trailer). The helpers of this package return it for every failed call; it keeps the gRPC status, so
// status.Code(err) and status.FromError(err) work on it as on any gRPC error.
//
//	var e *likeness.Error
//	if errors.As(err, &e) && e.Code == codes.InvalidArgument { fmt.Println("fix", e.Field) }
type Error struct {
	// Code is the gRPC status code.
	Code codes.Code
	// Message is the server's message: what went wrong and what to do about it.
	Message string
	// Field is the request field to fix, as a path of the request (`parameters.num_inference_steps`), from a
	// google.rpc.BadRequest detail; empty when the server named none.
	Field string
	// RetryDelay is how long to wait before retrying, from a google.rpc.RetryInfo detail (a full queue, a
	// per-minute quota); valid when HasRetryDelay.
	RetryDelay    time.Duration
	HasRetryDelay bool
	// Quota names the per-tenant quota that was exceeded (`max_active_jobs`, `images_per_minute`), from a
	// google.rpc.QuotaFailure detail; empty otherwise.
	Quota string
	// RequestID is the server's id of the call (the x-request-id trailer); quote it when reporting a problem.
	RequestID string

	status *status.Status
}

// Error is the code, the message, the field and the request id.
func (e *Error) Error() string {
	text := fmt.Sprintf("likeness: %s: %s", e.Code, e.Message)
	if e.Field != "" {
		text += fmt.Sprintf(" (field %s)", e.Field)
	}
	if e.HasRetryDelay {
		text += fmt.Sprintf(" (retry after %s)", e.RetryDelay)
	}
	if e.RequestID != "" {
		text += fmt.Sprintf(" (request id %s)", e.RequestID)
	}
	return text
}

// GRPCStatus is the call's status with its details, for status.FromError and status.Code.
func (e *Error) GRPCStatus() *status.Status {
	if e.status == nil {
		return status.New(e.Code, e.Message)
	}
	return e.status
}

// Is matches context.Canceled and context.DeadlineExceeded for the statuses gRPC reports them as, so
// errors.Is(err, context.DeadlineExceeded) works on a call that ran out of time.
func (e *Error) Is(target error) bool {
	switch target {
	case context.Canceled:
		return e.Code == codes.Canceled
	case context.DeadlineExceeded:
		return e.Code == codes.DeadlineExceeded
	}
	return false
}

// FromError is the *Error of a failed call: its status and details (status.FromError(err).Details()), with the
// request id from trailer when given. It returns nil for nil, err itself when it is already an *Error, and
// nil for errors that are not gRPC statuses.
func FromError(err error, trailer ...metadata.MD) *Error {
	if err == nil {
		return nil
	}
	var known *Error
	if errors.As(err, &known) {
		return known
	}
	s, ok := status.FromError(err)
	if !ok {
		return nil
	}
	e := &Error{Code: s.Code(), Message: s.Message(), status: s}
	for _, detail := range s.Details() {
		switch d := detail.(type) {
		case *errdetails.BadRequest:
			if violations := d.GetFieldViolations(); len(violations) > 0 && e.Field == "" {
				e.Field = violations[0].GetField()
			}
		case *errdetails.RetryInfo:
			if delay := d.GetRetryDelay(); delay != nil && !e.HasRetryDelay {
				e.RetryDelay = time.Duration(delay.GetSeconds())*time.Second + time.Duration(delay.GetNanos())
				e.HasRetryDelay = true
			}
		case *errdetails.QuotaFailure:
			if violations := d.GetViolations(); len(violations) > 0 && e.Quota == "" {
				e.Quota = violations[0].GetSubject()
			}
		}
	}
	for _, md := range trailer {
		if ids := md.Get(RequestIDKey); len(ids) > 0 && e.RequestID == "" {
			e.RequestID = ids[0]
		}
	}
	return e
}

// wrap turns a failed call's error into an *Error (other errors pass through), keeping nil nil.
func wrap(err error, trailer metadata.MD) error {
	if err == nil {
		return nil
	}
	if e := FromError(err, trailer); e != nil {
		return e
	}
	return err
}

// invalid is a request the client refuses before sending it, as the server would.
func invalid(field, format string, args ...interface{}) error {
	return &Error{Code: codes.InvalidArgument, Message: fmt.Sprintf(format, args...), Field: field}
}

// unary calls a unary method with the trailer captured, and returns an *Error when it fails.
func unary[Req, Resp any](
	ctx context.Context,
	method func(context.Context, Req, ...grpc.CallOption) (Resp, error),
	request Req,
) (Resp, error) {
	var trailer metadata.MD
	response, err := method(ctx, request, grpc.Trailer(&trailer))
	return response, wrap(err, trailer)
}
