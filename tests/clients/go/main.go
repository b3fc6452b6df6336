// End-to-end driver for the Go SDK: calls a running Likeness server and prints what it saw as JSON for
// tests/clients/test_go_client.py and tests/clients/test_go_real_server.py to check.
//
//	likeness-e2e [-ca CA_FILE] [-key API_KEY] ADDRESS   the scripted scenario (plaintext without -ca)
//	likeness-e2e -probe ADDRESS                          one SearchPrompts call configured only by
//	                                                     $LIKENESS_TLS_CA_FILE / $LIKENESS_API_KEY;
//	                                                     prints {"code": "<status code>"}
//	likeness-e2e -real -model ID -photos DIR [-quota] ADDRESS
//	                                                     the helpers against the real services, after the
//	                                                     README example trained model ID
//	likeness-e2e -webhook < {"secret", "headers", "body", "now"}
//	                                                     VerifyWebhookSignatureAt; prints {"error": "..."}
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	galleryv1 "github.com/likeness-ai/likeness/clients/go/gen/likeness/gallery/v1"
	inferencev1 "github.com/likeness-ai/likeness/clients/go/gen/likeness/inference/v1"
	trainerv1 "github.com/likeness-ai/likeness/clients/go/gen/likeness/trainer/v1"
	typev1 "github.com/likeness-ai/likeness/clients/go/gen/likeness/type/v1"
	"github.com/likeness-ai/likeness/clients/go/likeness"
)

type image struct {
	Index  int32  `json:"index"`
	Seed   string `json:"seed"`
	Format string `json:"format"`
	SHA256 string `json:"sha256"`
}

type upload struct {
	Name   string `json:"name"`
	Size   int    `json:"size"`
	SHA256 string `json:"sha256"`
}

type report struct {
	GalleryServing  bool     `json:"gallery_serving"`
	TemplateCount   int      `json:"template_count"`
	Placeholders    bool     `json:"placeholders"`
	RecordedID      string   `json:"recorded_id"`
	RecordedPrompt  string   `json:"recorded_prompt"`
	TopHitID        string   `json:"top_hit_id"`
	Accepted        string   `json:"accepted"`
	Progress        int      `json:"progress"`
	Warnings        []string `json:"warnings"`
	Images          []image  `json:"images"`
	SummarySeeds    []string `json:"summary_seeds"`
	FailureCode     string   `json:"failure_code"`
	FailureMessage  string   `json:"failure_message"`
	Sequences       []int64  `json:"sequences"`
	Missing         string   `json:"missing"`
	Uploads         []upload `json:"uploads"`
	DatasetID       string   `json:"dataset_id"`
	BadRequestField string   `json:"bad_request_field"`
	RetriedKey      string   `json:"retried_key"`
	RetriedJobID    string   `json:"retried_job_id"`
	GeneratedKey    string   `json:"generated_key"`
	DuplicateField  string   `json:"duplicate_field"`
}

type probeReport struct {
	Code string `json:"code"`
}

// probe makes one call with TLS and the key taken from the environment only.
func probe(address string) (*probeReport, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clients, err := likeness.Dial(address)
	if err != nil {
		return nil, err
	}
	defer clients.Close()
	_, err = clients.SearchPrompts(ctx, &galleryv1.SearchPromptsRequest{Query: "probe"})
	return &probeReport{Code: status.Code(err).String()}, nil
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func run(address string, opts ...grpc.DialOption) (*report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clients, err := likeness.Dial(address, opts...)
	if err != nil {
		return nil, err
	}
	defer clients.Close()
	if err := clients.WaitUntilServing(ctx, ""); err != nil {
		return nil, err
	}
	out := &report{}
	if out.GalleryServing, err = clients.IsServing(ctx, likeness.GalleryService); err != nil {
		return nil, err
	}

	templates, err := clients.ListTemplates(ctx, "")
	if err != nil {
		return nil, err
	}
	out.TemplateCount = len(templates)
	out.Placeholders = true
	for _, template := range templates {
		out.Placeholders = out.Placeholders && strings.Contains(template.GetTemplate(), "{subject}")
	}
	steps := int32(20)
	recorded, err := clients.RecordPrompt(ctx, &galleryv1.RecordPromptRequest{
		Prompt:     "a charcoal sketch of {subject} reading in a library",
		Parameters: &typev1.GenerationParameters{NumInferenceSteps: &steps},
		Tags:       []string{"go-test"},
	})
	if err != nil {
		return nil, err
	}
	out.RecordedID = recorded.GetPrompt().GetPromptId()
	fetched, err := clients.GetPrompt(ctx, out.RecordedID)
	if err != nil {
		return nil, err
	}
	out.RecordedPrompt = fetched.GetPrompt()
	search, err := clients.SearchPrompts(ctx, &galleryv1.SearchPromptsRequest{
		Query: "charcoal sketch library", Tags: []string{"go-test"},
	})
	if err != nil {
		return nil, err
	}
	if len(search.GetResults()) > 0 {
		out.TopHitID = search.GetResults()[0].GetPrompt().GetPromptId()
	}

	result, err := clients.Generate(ctx, &inferencev1.GenerateImagesRequest{
		Prompt:     "a photo of {subject} on a mountain top",
		NumImages:  2,
		Parameters: &typev1.GenerationParameters{NumInferenceSteps: &steps},
	}, func(*inferencev1.Progress) { out.Progress++ })
	if err != nil {
		return nil, err
	}
	out.Accepted = result.Accepted.GetEffectivePrompt()
	out.Warnings = result.Warnings
	for _, img := range result.Images {
		out.Images = append(out.Images, image{
			Index: img.Index, Seed: fmt.Sprint(img.Seed), Format: img.Extension(), SHA256: digest(img.Data),
		})
	}
	for _, seed := range result.Summary.GetSeeds() {
		out.SummarySeeds = append(out.SummarySeeds, fmt.Sprint(seed))
	}

	_, err = clients.Generate(ctx, &inferencev1.GenerateImagesRequest{Prompt: "fail midway", NumImages: 2}, nil)
	var failed *likeness.Error
	if !errors.As(err, &failed) {
		return nil, fmt.Errorf("a failed generation should be a *likeness.Error, got %v", err)
	}
	out.FailureCode, out.FailureMessage = failed.Code.String(), failed.Message

	err = likeness.WatchTrainingJob(ctx, clients.Trainer, "job-go", 0, likeness.WatchOptions{Backoff: 10 * time.Millisecond},
		func(event *trainerv1.WatchTrainingJobResponse) error {
			out.Sequences = append(out.Sequences, event.GetSequence())
			return nil
		})
	if err != nil {
		return nil, err
	}
	err = clients.WatchTrainingJob(ctx, "missing", 0, func(*trainerv1.WatchTrainingJobResponse) error { return nil })
	out.Missing = status.Code(err).String()

	if err := uploadAndCreate(ctx, clients, out); err != nil {
		return nil, err
	}
	return out, nil
}

// uploadAndCreate checks a BadRequest detail, uploads a file of 2.5 chunks and two photos from memory (last,
// as the scripted trainer keeps the last upload), and creates jobs: one whose first attempt the scripted trainer fails with UNAVAILABLE (gRPC retries it under
// GRPC_GO_RETRY=on), one without a key.
func uploadAndCreate(ctx context.Context, clients *likeness.Clients, out *report) error {
	dir, err := os.MkdirTemp("", "likeness-go-upload")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// The raw stub, photo before options: the server answers INVALID_ARGUMENT naming the field.
	stream, err := clients.Trainer.PrepareDataset(ctx)
	if err != nil {
		return err
	}
	chunk := &trainerv1.PhotoChunk{FileName: "early.png", Data: []byte("x")}
	_ = stream.Send(&trainerv1.PrepareDatasetRequest{Payload: &trainerv1.PrepareDatasetRequest_PhotoChunk{PhotoChunk: chunk}})
	_, err = stream.CloseAndRecv()
	if e := likeness.FromError(err); e != nil && e.Code == codes.InvalidArgument {
		out.BadRequestField = e.Field
	}

	large := bytes.Repeat([]byte("0123456789abcdef"), likeness.UploadChunkBytes*5/2/16)
	path := filepath.Join(dir, "large.jpg")
	if err := os.WriteFile(path, large, 0o644); err != nil {
		return err
	}
	photos := []likeness.Photo{likeness.PhotoFile(path), likeness.PhotoBytes("small.png", []byte("small")), {Data: nil}}
	prepared, err := clients.PrepareDataset(ctx, photos, &trainerv1.DatasetOptions{DisplayName: "go upload"})
	if err != nil {
		return err
	}
	out.DatasetID = prepared.GetDataset().GetDatasetId()
	for _, photo := range []struct {
		name string
		data []byte
	}{{"large.jpg", large}, {"small.png", []byte("small")}, {"photo-002", nil}} {
		out.Uploads = append(out.Uploads, upload{Name: photo.name, Size: len(photo.data), SHA256: digest(photo.data)})
	}
	_, err = clients.PrepareDataset(ctx, []likeness.Photo{likeness.PhotoBytes("a.png", nil), likeness.PhotoBytes("a.png", nil)}, nil)
	if e := likeness.FromError(err); e != nil {
		out.DuplicateField = e.Field
	}

	spec := &trainerv1.TrainingJobSpec{BaseModel: "tiny-sd15", ClassNoun: "dog", DatasetId: out.DatasetID}
	out.RetriedKey = fmt.Sprintf("flaky-go-%d", time.Now().UnixNano())
	created, err := clients.CreateTrainingJob(ctx, &trainerv1.CreateTrainingJobRequest{Spec: spec, IdempotencyKey: out.RetriedKey})
	if err != nil {
		return fmt.Errorf("create with a flaky key (is GRPC_GO_RETRY=on?): %w", err)
	}
	out.RetriedJobID = created.GetJob().GetJobId()
	request := &trainerv1.CreateTrainingJobRequest{Spec: spec}
	if _, err := clients.CreateTrainingJob(ctx, request); err != nil {
		return err
	}
	out.GeneratedKey = request.IdempotencyKey
	return nil
}

type realReport struct {
	ModelID         string   `json:"model_id"`
	ModelState      string   `json:"model_state"`
	Listed          bool     `json:"listed"`
	JobState        string   `json:"job_state"`
	JobCount        int      `json:"job_count"`
	BadRequestCode  string   `json:"bad_request_code"`
	BadRequestField string   `json:"bad_request_field"`
	RequestID       string   `json:"request_id"`
	QuotaCode       string   `json:"quota_code"`
	QuotaName       string   `json:"quota_name"`
	RetryDelayMs    int64    `json:"retry_delay_ms"`
	HasRetryDelay   bool     `json:"has_retry_delay"`
	CancelledState  string   `json:"cancelled_state"`
	Templates       int      `json:"templates"`
	Downloaded      []string `json:"downloaded"`
	FilesRemoved    int32    `json:"files_removed"`
	AfterDelete     string   `json:"after_delete"`
}

// realServices exercises the helpers the README example does not, against the real services, on the subject model
// the example trained.
func realServices(address, modelID, photosDir string, quota bool) (*realReport, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c, err := likeness.Dial(address)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	out := &realReport{}
	model, err := c.GetSubjectModel(ctx, modelID)
	if err != nil {
		return nil, err
	}
	out.ModelID, out.ModelState = model.GetModel().GetModelId(), model.GetState().String()
	models, err := c.ListSubjectModels(ctx, "toy-sd15", false)
	if err != nil {
		return nil, err
	}
	for _, m := range models {
		out.Listed = out.Listed || m.GetModel().GetModelId() == modelID
	}
	jobs, err := c.ListTrainingJobs(ctx, nil)
	if err != nil {
		return nil, err
	}
	out.JobCount = len(jobs.GetJobs())
	if out.JobCount > 0 {
		job, err := c.GetTrainingJob(ctx, jobs.GetJobs()[0].GetJobId())
		if err != nil {
			return nil, err
		}
		out.JobState = job.GetState().String()
	}
	templates, err := c.ListTemplates(ctx, "")
	if err != nil {
		return nil, err
	}
	out.Templates = len(templates)

	steps := int32(100000)
	_, err = c.Generate(ctx, &inferencev1.GenerateImagesRequest{
		Prompt: "{subject}", SubjectModelId: modelID, Parameters: &typev1.GenerationParameters{NumInferenceSteps: &steps},
	}, nil)
	if e := likeness.FromError(err); e != nil {
		out.BadRequestCode, out.BadRequestField, out.RequestID = e.Code.String(), e.Field, e.RequestID
	}

	if quota { // the server runs with --quota-active-jobs 1
		paths, err := filepath.Glob(filepath.Join(photosDir, "*"))
		if err != nil {
			return nil, err
		}
		photos, err := likeness.InlinePhotos(likeness.PhotoFiles(paths...))
		if err != nil {
			return nil, err
		}
		spec := &trainerv1.TrainingJobSpec{
			BaseModel: "toy-sd15", ClassNoun: "toy", Hyperparameters: &trainerv1.Hyperparameters{MaxTrainSteps: proto.Int32(100000)},
		}
		long, err := c.CreateTrainingJob(ctx, &trainerv1.CreateTrainingJobRequest{Spec: spec, Photos: photos})
		if err != nil {
			return nil, err
		}
		_, err = c.CreateTrainingJob(ctx, &trainerv1.CreateTrainingJobRequest{Spec: spec, Photos: photos})
		if e := likeness.FromError(err); e != nil {
			out.QuotaCode, out.QuotaName = e.Code.String(), e.Quota
			out.RetryDelayMs, out.HasRetryDelay = e.RetryDelay.Milliseconds(), e.HasRetryDelay
		}
		cancelled, err := c.CancelTrainingJob(ctx, long.GetJob().GetJobId())
		if err != nil {
			return nil, err
		}
		out.CancelledState = cancelled.GetState().String()
	}

	dir, err := os.MkdirTemp("", "likeness-go-model")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	files, err := c.DownloadSubjectModel(ctx, modelID, dir, inferencev1.ArtifactKind_ARTIFACT_KIND_MANIFEST)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		out.Downloaded = append(out.Downloaded, f.File.GetPath())
	}
	deleted, err := c.DeleteSubjectModel(ctx, modelID)
	if err != nil {
		return nil, err
	}
	out.FilesRemoved = deleted.GetFilesRemoved()
	_, err = c.GetSubjectModel(ctx, modelID)
	out.AfterDelete = status.Code(err).String()
	return out, nil
}

type webhookCase struct {
	Secret  string            `json:"secret"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
	Now     int64             `json:"now"`
}

func webhook() (interface{}, error) {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		return nil, err
	}
	var cases []webhookCase
	if err := json.Unmarshal(input, &cases); err != nil {
		return nil, err
	}
	results := []string{}
	for _, c := range cases {
		headers := http.Header{}
		for k, v := range c.Headers {
			headers.Set(k, v)
		}
		err := likeness.VerifyWebhookSignatureAt(c.Secret, headers, []byte(c.Body), time.Unix(c.Now, 0), likeness.WebhookTolerance)
		if err != nil {
			results = append(results, err.Error())
		} else {
			results = append(results, "")
		}
	}
	return results, nil
}

func main() {
	caFile := flag.String("ca", "", "PEM file of the CA to trust (TLS); plaintext when empty")
	apiKey := flag.String("key", "", "API key to send")
	probeOnly := flag.Bool("probe", false, "make one call configured by the environment")
	realMode := flag.Bool("real", false, "exercise the helpers against the real services")
	modelID := flag.String("model", "", "subject model the README example trained (-real)")
	photos := flag.String("photos", "", "folder of photos (-real)")
	quota := flag.Bool("quota", false, "check the active-jobs quota's details (-real; the server has --quota-active-jobs 1)")
	webhookMode := flag.Bool("webhook", false, "verify webhook signatures read as JSON from stdin")
	flag.Parse()
	address := flag.Arg(0)
	var out interface{}
	var err error
	switch {
	case *webhookMode:
		out, err = webhook()
	case *probeOnly:
		out, err = probe(address)
	case *realMode:
		out, err = realServices(address, *modelID, *photos, *quota)
	default:
		out, err = run(address, likeness.WithTLSCAFile(*caFile), likeness.WithAPIKey(*apiKey))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e failed:", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "e2e failed:", err)
		os.Exit(1)
	}
}
