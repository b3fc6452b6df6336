package likeness

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"google.golang.org/protobuf/proto"

	trainerv1 "github.com/likeness-ai/likeness/clients/go/gen/likeness/trainer/v1"
)

// NewIdempotencyKey is a random key for CreateTrainingJobRequest.IdempotencyKey.
func NewIdempotencyKey() string {
	var key [16]byte
	if _, err := rand.Read(key[:]); err != nil {
		panic("likeness: no randomness for an idempotency key: " + err.Error())
	}
	return hex.EncodeToString(key[:])
}

// CreateTrainingJob queues a training job on request.Spec.DatasetId, or on request.Photos sent inline (see
// InlinePhotos; prepared with request.DatasetOptions). request.Webhook, when set, receives the job's events
// (verify them with VerifyWebhookSignature).
//
// When request.IdempotencyKey is empty it is set to a random key, on request itself: gRPC's retries (see
// ServiceConfig) resend that key, and so does a caller that retries with the same request, so a retry returns
// the first job (response.Existing) instead of queueing a second.
func (c *Clients) CreateTrainingJob(ctx context.Context, request *trainerv1.CreateTrainingJobRequest) (*trainerv1.CreateTrainingJobResponse, error) {
	if request == nil {
		return nil, invalid("spec", "a training job needs a spec")
	}
	if request.IdempotencyKey == "" {
		request.IdempotencyKey = NewIdempotencyKey()
	}
	if size := proto.Size(request); size > MaxMessageBytes-64*1024 {
		return nil, invalid("photos", "the request is %d bytes, over the %d-byte message limit; upload the photos with "+
			"PrepareDataset and set spec.dataset_id", size, MaxMessageBytes)
	}
	return unary(ctx, c.Trainer.CreateTrainingJob, request)
}

// GetTrainingJob returns one training job.
func (c *Clients) GetTrainingJob(ctx context.Context, jobID string) (*trainerv1.TrainingJob, error) {
	response, err := unary(ctx, c.Trainer.GetTrainingJob, &trainerv1.GetTrainingJobRequest{JobId: jobID})
	return response.GetJob(), err
}

// ListTrainingJobs lists training jobs, newest first: one page (follow NextPageToken). A nil request lists
// the first page of all jobs.
func (c *Clients) ListTrainingJobs(ctx context.Context, request *trainerv1.ListTrainingJobsRequest) (*trainerv1.ListTrainingJobsResponse, error) {
	if request == nil {
		request = &trainerv1.ListTrainingJobsRequest{}
	}
	return unary(ctx, c.Trainer.ListTrainingJobs, request)
}

// CancelTrainingJob cancels a queued or running job and returns it.
func (c *Clients) CancelTrainingJob(ctx context.Context, jobID string) (*trainerv1.TrainingJob, error) {
	response, err := unary(ctx, c.Trainer.CancelTrainingJob, &trainerv1.CancelTrainingJobRequest{JobId: jobID})
	return response.GetJob(), err
}

// WatchTrainingJob calls handle with each event of a job after afterSequence until the job ends, resuming
// after dropped connections; see the package function WatchTrainingJob, which it calls with WatchOptions{}.
func (c *Clients) WatchTrainingJob(
	ctx context.Context, jobID string, afterSequence int64, handle func(*trainerv1.WatchTrainingJobResponse) error,
) error {
	return WatchTrainingJob(ctx, c.Trainer, jobID, afterSequence, WatchOptions{}, handle)
}
