package likeness

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang/protobuf/ptypes/duration"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	trainerv1 "github.com/likeness-ai/likeness/clients/go/gen/likeness/trainer/v1"
)

func TestServiceConfigIsTheCanonicalCopy(t *testing.T) {
	canonical, err := os.ReadFile(filepath.Join("..", "..", "service_config.json"))
	if err != nil {
		t.Fatalf("the canonical clients/service_config.json: %v", err)
	}
	if !bytes.Equal(canonical, []byte(ServiceConfig())) {
		t.Fatal("clients/go/likeness/service_config.json differs from clients/service_config.json; copy it over")
	}
}

func TestDialAcceptsTheServiceConfigAndSharesOneConnection(t *testing.T) {
	c, err := Dial("127.0.0.1:1") // nothing listens: Dial does not block, but grpc parses the service config
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.TrainerConn != c.InferenceConn || c.InferenceConn != c.GalleryConn || c.Conn != c.TrainerConn {
		t.Fatal("one address should give one connection")
	}
	if len(c.conns()) != 1 {
		t.Fatalf("conns: %d", len(c.conns()))
	}
}

func TestPerServiceAddresses(t *testing.T) {
	t.Setenv("LIKENESS_ADDRESS", "shared:1")
	t.Setenv("LIKENESS_GALLERY_ADDRESS", "gallery-env:3")
	got := ResolveEndpoints("", WithInferenceAddress("inference:2"))
	want := Endpoints{Trainer: "shared:1", Inference: "inference:2", Gallery: "gallery-env:3"}
	if got != want {
		t.Fatalf("endpoints %+v, want %+v", got, want)
	}
	if got := ResolveEndpoints("given:9", WithGalleryAddress("gallery:4")); got.Trainer != "given:9" || got.Gallery != "gallery:4" {
		t.Fatalf("endpoints %+v", got)
	}
	c, err := Dial("127.0.0.1:1", WithInferenceAddress("127.0.0.1:2"), WithGalleryAddress("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.TrainerConn == c.InferenceConn || c.GalleryConn != c.TrainerConn || len(c.conns()) != 2 {
		t.Fatalf("the inference service should have its own connection, the others share one: %+v", c.Endpoints)
	}
}

func TestErrorCarriesDetails(t *testing.T) {
	delay := &duration.Duration{Seconds: 1, Nanos: 500_000_000}
	s, err := status.New(codes.InvalidArgument, "must be 1 to 150").WithDetails(
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "parameters.num_inference_steps", Description: "must be 1 to 150"},
		}},
		&errdetails.RetryInfo{RetryDelay: delay},
		&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: "images_per_minute"}}},
	)
	if err != nil {
		t.Fatal(err)
	}
	e := FromError(s.Err(), metadata.Pairs(RequestIDKey, "req-7"))
	if e.Code != codes.InvalidArgument || e.Message != "must be 1 to 150" || e.Field != "parameters.num_inference_steps" {
		t.Fatalf("error %+v", e)
	}
	if !e.HasRetryDelay || e.RetryDelay != 1500*time.Millisecond || e.Quota != "images_per_minute" || e.RequestID != "req-7" {
		t.Fatalf("error %+v", e)
	}
	var err2 error = e
	if status.Code(err2) != codes.InvalidArgument || len(status.Convert(err2).Details()) != 3 {
		t.Fatal("the *Error should keep its status and details")
	}
	for _, part := range []string{"InvalidArgument", "must be 1 to 150", "parameters.num_inference_steps", "req-7"} {
		if !strings.Contains(e.Error(), part) {
			t.Fatalf("%q lacks %q", e.Error(), part)
		}
	}
	if FromError(e) != e || FromError(nil) != nil || FromError(errors.New("not a status")) != nil {
		t.Fatal("FromError of an *Error, nil, or a plain error")
	}
	plain := FromError(status.Error(codes.NotFound, "no such job"))
	if plain.Field != "" || plain.HasRetryDelay || plain.Code != codes.NotFound {
		t.Fatalf("error without details: %+v", plain)
	}
	if !errors.Is(FromError(status.Error(codes.DeadlineExceeded, "late")), context.DeadlineExceeded) {
		t.Fatal("DeadlineExceeded should match context.DeadlineExceeded")
	}
}

// fakeTrainer records what the helpers send.
type fakeTrainer struct {
	trainerv1.TrainerServiceClient
	sent    []*trainerv1.PrepareDatasetRequest
	created []*trainerv1.CreateTrainingJobRequest
}

type fakeUpload struct {
	grpc.ClientStream
	trainer *fakeTrainer
}

func (f *fakeTrainer) PrepareDataset(context.Context, ...grpc.CallOption) (trainerv1.TrainerService_PrepareDatasetClient, error) {
	return &fakeUpload{trainer: f}, nil
}

func (f *fakeTrainer) CreateTrainingJob(_ context.Context, in *trainerv1.CreateTrainingJobRequest, _ ...grpc.CallOption) (*trainerv1.CreateTrainingJobResponse, error) {
	f.created = append(f.created, in)
	return &trainerv1.CreateTrainingJobResponse{Job: &trainerv1.TrainingJob{JobId: "job-1", IdempotencyKey: in.IdempotencyKey}}, nil
}

func (u *fakeUpload) Send(m *trainerv1.PrepareDatasetRequest) error {
	u.trainer.sent = append(u.trainer.sent, m)
	return nil
}

func (u *fakeUpload) CloseAndRecv() (*trainerv1.PrepareDatasetResponse, error) {
	return &trainerv1.PrepareDatasetResponse{Dataset: &trainerv1.Dataset{DatasetId: "ds-1"}}, nil
}

func (u *fakeUpload) Trailer() metadata.MD { return nil }

func TestPrepareDatasetStreamsOptionsThenChunks(t *testing.T) {
	dir := t.TempDir()
	big := bytes.Repeat([]byte("x"), UploadChunkBytes*2+UploadChunkBytes/2)
	if err := os.WriteFile(filepath.Join(dir, "big.jpg"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "empty.jpg"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	trainer := &fakeTrainer{}
	c := &Clients{Trainer: trainer}
	photos := append(PhotoFiles(filepath.Join(dir, "big.jpg"), filepath.Join(dir, "empty.jpg")),
		Photo{Data: []byte("abc"), Caption: "a caption"}, PhotoBytes("exact.png", make([]byte, UploadChunkBytes)))
	response, err := c.PrepareDataset(context.Background(), photos, &trainerv1.DatasetOptions{DisplayName: "set"})
	if err != nil || response.GetDataset().GetDatasetId() != "ds-1" {
		t.Fatalf("%v %v", response, err)
	}
	if trainer.sent[0].GetOptions().GetDisplayName() != "set" {
		t.Fatal("options must come first")
	}
	type chunk struct {
		name    string
		size    int
		caption string
	}
	var got []chunk
	for _, m := range trainer.sent[1:] {
		c := m.GetPhotoChunk()
		if c == nil {
			t.Fatal("only the first message carries options")
		}
		got = append(got, chunk{c.FileName, len(c.Data), c.Caption})
	}
	want := []chunk{
		{"big.jpg", UploadChunkBytes, ""}, {"big.jpg", UploadChunkBytes, ""}, {"big.jpg", UploadChunkBytes / 2, ""},
		{"empty.jpg", 0, ""}, {"photo-002", 3, "a caption"}, {"exact.png", UploadChunkBytes, ""},
	}
	if len(got) != len(want) {
		t.Fatalf("chunks %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("chunk %d: %v, want %v", i, got[i], want[i])
		}
	}

	trainer.sent = nil
	_, err = c.PrepareDataset(context.Background(), []Photo{PhotoBytes("a.jpg", nil), PhotoFile("/x/a.jpg")}, nil)
	var e *Error
	if !errors.As(err, &e) || e.Code != codes.InvalidArgument || e.Field != "photos" || len(trainer.sent) != 0 {
		t.Fatalf("repeated names: %v, %d messages sent", err, len(trainer.sent))
	}
}

func TestCreateTrainingJobSetsAnIdempotencyKey(t *testing.T) {
	trainer := &fakeTrainer{}
	c := &Clients{Trainer: trainer}
	request := &trainerv1.CreateTrainingJobRequest{
		Spec:    &trainerv1.TrainingJobSpec{BaseModel: "toy-sd15"},
		Webhook: &trainerv1.Webhook{Url: "https://hooks.example.com/likeness", Secret: "0123456789abcdef"},
	}
	if _, err := c.CreateTrainingJob(context.Background(), request); err != nil {
		t.Fatal(err)
	}
	key := trainer.created[0].IdempotencyKey
	if len(key) != 32 || request.IdempotencyKey != key {
		t.Fatalf("key %q", key)
	}
	if trainer.created[0].GetWebhook().GetSecret() != "0123456789abcdef" {
		t.Fatal("the webhook should pass through")
	}
	if _, err := c.CreateTrainingJob(context.Background(), &trainerv1.CreateTrainingJobRequest{IdempotencyKey: "mine"}); err != nil {
		t.Fatal(err)
	}
	if trainer.created[1].IdempotencyKey != "mine" || NewIdempotencyKey() == NewIdempotencyKey() {
		t.Fatal("a given key is kept; new keys are random")
	}
	huge := &trainerv1.CreateTrainingJobRequest{Photos: []*trainerv1.Photo{{Data: make([]byte, MaxMessageBytes)}}}
	_, err := c.CreateTrainingJob(context.Background(), huge)
	if e := FromError(err); e == nil || e.Field != "photos" || len(trainer.created) != 2 {
		t.Fatalf("an oversized request: %v", err)
	}
}
