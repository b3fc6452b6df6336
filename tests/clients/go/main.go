// End-to-end driver for the Go SDK: calls a running Likeness server and prints what it saw as JSON for
// tests/clients/test_go_client.py to check.
//
//	likeness-e2e [-ca CA_FILE] [-key API_KEY] ADDRESS   the whole scenario (plaintext without -ca)
//	likeness-e2e -probe ADDRESS                          one SearchPrompts call configured only by
//	                                                     $LIKENESS_TLS_CA_FILE / $LIKENESS_API_KEY;
//	                                                     prints {"code": "<status code>"}
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

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

type report struct {
	GalleryServing bool     `json:"gallery_serving"`
	TemplateCount  int      `json:"template_count"`
	Placeholders   bool     `json:"placeholders"`
	RecordedID     string   `json:"recorded_id"`
	TopHitID       string   `json:"top_hit_id"`
	Accepted       string   `json:"accepted"`
	Progress       int      `json:"progress"`
	Warnings       []string `json:"warnings"`
	Images         []image  `json:"images"`
	SummarySeeds   []string `json:"summary_seeds"`
	FailureCode    string   `json:"failure_code"`
	Sequences      []int64  `json:"sequences"`
	Missing        string   `json:"missing"`
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
	_, err = clients.Gallery.SearchPrompts(ctx, &galleryv1.SearchPromptsRequest{Query: "probe"})
	return &probeReport{Code: status.Code(err).String()}, nil
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
	if out.GalleryServing, err = clients.IsServing(ctx, "likeness.gallery.v1.GalleryService"); err != nil {
		return nil, err
	}

	templates, err := clients.Gallery.ListTemplates(ctx, &galleryv1.ListTemplatesRequest{})
	if err != nil {
		return nil, err
	}
	out.TemplateCount = len(templates.GetTemplates())
	out.Placeholders = true
	for _, template := range templates.GetTemplates() {
		out.Placeholders = out.Placeholders && strings.Contains(template.GetTemplate(), "{subject}")
	}
	steps := int32(20)
	recorded, err := clients.Gallery.RecordPrompt(ctx, &galleryv1.RecordPromptRequest{
		Prompt:     "a charcoal sketch of {subject} reading in a library",
		Parameters: &typev1.GenerationParameters{NumInferenceSteps: &steps},
		Tags:       []string{"go-test"},
	})
	if err != nil {
		return nil, err
	}
	out.RecordedID = recorded.GetPrompt().GetPromptId()
	search, err := clients.Gallery.SearchPrompts(ctx, &galleryv1.SearchPromptsRequest{
		Query: "charcoal sketch library", Tags: []string{"go-test"},
	})
	if err != nil {
		return nil, err
	}
	if len(search.GetResults()) > 0 {
		out.TopHitID = search.GetResults()[0].GetPrompt().GetPromptId()
	}

	stream, err := clients.Inference.GenerateImages(ctx, &inferencev1.GenerateImagesRequest{
		Prompt:     "a photo of {subject} on a mountain top",
		NumImages:  2,
		Parameters: &typev1.GenerationParameters{NumInferenceSteps: &steps},
	})
	if err != nil {
		return nil, err
	}
	result, err := likeness.CollectImages(stream, func(*inferencev1.Progress) { out.Progress++ })
	if err != nil {
		return nil, err
	}
	out.Accepted = result.Accepted.GetEffectivePrompt()
	out.Warnings = result.Warnings
	for _, img := range result.Images {
		sum := sha256.Sum256(img.Data)
		out.Images = append(out.Images, image{
			Index: img.Index, Seed: fmt.Sprint(img.Seed), Format: img.Extension(), SHA256: hex.EncodeToString(sum[:]),
		})
	}
	for _, seed := range result.Summary.GetSeeds() {
		out.SummarySeeds = append(out.SummarySeeds, fmt.Sprint(seed))
	}

	failing, err := clients.Inference.GenerateImages(ctx, &inferencev1.GenerateImagesRequest{Prompt: "fail midway", NumImages: 2})
	if err != nil {
		return nil, err
	}
	_, err = likeness.CollectImages(failing, nil)
	out.FailureCode = status.Code(err).String()

	err = likeness.WatchTrainingJob(ctx, clients.Trainer, "job-go", 0, likeness.WatchOptions{Backoff: 10 * time.Millisecond},
		func(event *trainerv1.WatchTrainingJobResponse) error {
			out.Sequences = append(out.Sequences, event.GetSequence())
			return nil
		})
	if err != nil {
		return nil, err
	}
	err = likeness.WatchTrainingJob(ctx, clients.Trainer, "missing", 0, likeness.WatchOptions{},
		func(*trainerv1.WatchTrainingJobResponse) error { return nil })
	out.Missing = status.Code(err).String()
	return out, nil
}

func main() {
	caFile := flag.String("ca", "", "PEM file of the CA to trust (TLS); plaintext when empty")
	apiKey := flag.String("key", "", "API key to send")
	probeOnly := flag.Bool("probe", false, "make one call configured by the environment")
	flag.Parse()
	address := flag.Arg(0)
	var out interface{}
	var err error
	if *probeOnly {
		out, err = probe(address)
	} else {
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
