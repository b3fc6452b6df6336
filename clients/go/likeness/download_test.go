package likeness

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	inferencev1 "github.com/likeness-ai/likeness/clients/go/gen/likeness/inference/v1"
)

// fakeInference answers DownloadSubjectModel with a scripted stream.
type fakeInference struct {
	inferencev1.InferenceServiceClient
	messages []*inferencev1.DownloadSubjectModelResponse
}

type fakeDownload struct {
	grpc.ClientStream
	messages []*inferencev1.DownloadSubjectModelResponse
}

func (f *fakeInference) DownloadSubjectModel(context.Context, *inferencev1.DownloadSubjectModelRequest, ...grpc.CallOption) (inferencev1.InferenceService_DownloadSubjectModelClient, error) {
	return &fakeDownload{messages: f.messages}, nil
}

func (d *fakeDownload) Recv() (*inferencev1.DownloadSubjectModelResponse, error) {
	if len(d.messages) == 0 {
		return nil, io.EOF
	}
	m := d.messages[0]
	d.messages = d.messages[1:]
	return m, nil
}

func (d *fakeDownload) Trailer() metadata.MD { return nil }

func header(path string, data []byte) *inferencev1.DownloadSubjectModelResponse {
	sum := sha256.Sum256(data)
	return &inferencev1.DownloadSubjectModelResponse{Payload: &inferencev1.DownloadSubjectModelResponse_File{File: &inferencev1.ArtifactFile{
		Path: path, SizeBytes: int64(len(data)), Sha256: hex.EncodeToString(sum[:]), Kind: inferencev1.ArtifactKind_ARTIFACT_KIND_WEIGHTS,
	}}}
}

func data(b []byte) *inferencev1.DownloadSubjectModelResponse {
	return &inferencev1.DownloadSubjectModelResponse{Payload: &inferencev1.DownloadSubjectModelResponse_Data{Data: b}}
}

func download(t *testing.T, dir string, messages ...*inferencev1.DownloadSubjectModelResponse) ([]DownloadedFile, error) {
	t.Helper()
	c := &Clients{Inference: &fakeInference{messages: messages}}
	return c.DownloadSubjectModel(context.Background(), "model-1", dir)
}

// leftovers are the files under dir, relative, sorted by the walk.
func leftovers(t *testing.T, dir string) []string {
	var found []string
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			found = append(found, rel)
		}
		return nil
	})
	return found
}

func TestDownloadSubjectModelWritesVerifiedFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	weights := []byte(strings.Repeat("w", 3000))
	manifest := []byte(`{"model_id": "model-1"}`)
	files, err := download(t, dir,
		header("adapter/adapter_model.safetensors", weights), data(weights[:1000]), data(weights[1000:]),
		header("manifest.json", manifest), data(manifest),
		header("empty.txt", nil),
	)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 || files[0].Path != filepath.Join(dir, "adapter", "adapter_model.safetensors") {
		t.Fatalf("files %+v", files)
	}
	got, _ := os.ReadFile(files[0].Path)
	if string(got) != string(weights) {
		t.Fatal("weights differ")
	}
	if names := leftovers(t, dir); len(names) != 3 {
		t.Fatalf("files on disk: %v", names)
	}
}

func TestDownloadSubjectModelRefusesBadStreams(t *testing.T) {
	weights := []byte("0123456789")
	corrupt := header("weights.bin", weights)
	corrupt.GetFile().Sha256 = strings.Repeat("0", 64)
	cases := map[string][]*inferencev1.DownloadSubjectModelResponse{
		"checksum":          {corrupt, data(weights)},
		"short":             {header("weights.bin", weights), data(weights[:5])},
		"long":              {header("weights.bin", weights), data(weights), data([]byte("!"))},
		"data first":        {data(weights)},
		"parent":            {header("../escape.bin", weights), data(weights)},
		"nested parent":     {header("adapter/../../escape.bin", weights), data(weights)},
		"absolute":          {header("/tmp/escape.bin", weights), data(weights)},
		"backslash":         {header(`..\escape.bin`, weights), data(weights)},
		"empty path":        {header("", weights), data(weights)},
		"the folder itself": {header(".", weights), data(weights)},
	}
	for name, messages := range cases {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "model")
			if _, err := download(t, dir, messages...); err == nil {
				t.Fatal("accepted")
			}
			if names := leftovers(t, root); len(names) != 0 {
				t.Fatalf("left behind: %v", names)
			}
		})
	}
}

func TestDownloadSubjectModelRefusesSymlinkedFolders(t *testing.T) {
	root := t.TempDir()
	dir, outside := filepath.Join(root, "model"), filepath.Join(root, "outside")
	for _, d := range []string{dir, outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(dir, "adapter")); err != nil {
		t.Skip("no symbolic links here:", err)
	}
	weights := []byte("w")
	if _, err := download(t, dir, header("adapter/weights.bin", weights), data(weights)); err == nil {
		t.Fatal("wrote through a symbolic link")
	}
	if names := leftovers(t, outside); len(names) != 0 {
		t.Fatalf("written outside: %v", names)
	}
}

func TestSafeJoin(t *testing.T) {
	for _, ok := range []string{"a", "a/b/c.bin", "a/./b", "..a/b", "a..b"} {
		if _, err := SafeJoin("/base", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "../a", "a/../../b", "/etc/passwd", `a\..\b`, "a\x00b", "a/.."} {
		if got, err := SafeJoin("/base", bad); err == nil {
			t.Errorf("%q accepted as %q", bad, got)
		}
	}
}

// Signed by likeness_client.webhooks.signed_headers (the Python SDK, which the trainer signs with).
const (
	webhookSecret    = "a-secret-of-16-chars"
	webhookBody      = `{"type":"training_job.state_changed","sequence":3}`
	webhookSignature = "v1,0n3epcZO9E+XBXFOIs6enq1pNCCq6ZrqfU8U/gfc53k="
	otherSignature   = "v1,tRio2LsJz+qll7vwzLuE4Na+0jahFSZ+plkPrDLzZck=" // the same delivery with another secret
)

func TestVerifyWebhookSignature(t *testing.T) {
	signedAt := time.Unix(1750000000, 0)
	headers := func(signature string) http.Header {
		h := http.Header{}
		h.Set("Webhook-Id", "msg_2mF1")
		h.Set("Webhook-Timestamp", "1750000000")
		h.Set("Webhook-Signature", signature)
		return h
	}
	verify := func(h http.Header, body string, now time.Time) error {
		return VerifyWebhookSignatureAt(webhookSecret, h, []byte(body), now, WebhookTolerance)
	}
	if err := verify(headers(webhookSignature), webhookBody, signedAt.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	// During a secret rotation several signatures come, space-separated; one match is enough.
	if err := verify(headers("v1a,abc "+otherSignature+" "+webhookSignature), webhookBody, signedAt); err != nil {
		t.Fatal(err)
	}
	refused := map[string]error{
		"other secret":  verify(headers(otherSignature), webhookBody, signedAt),
		"changed body":  verify(headers(webhookSignature), webhookBody+" ", signedAt),
		"too old":       verify(headers(webhookSignature), webhookBody, signedAt.Add(WebhookTolerance+time.Second)),
		"from future":   verify(headers(webhookSignature), webhookBody, signedAt.Add(-WebhookTolerance-time.Second)),
		"no signature":  verify(headers(""), webhookBody, signedAt),
		"not base64":    verify(headers("v1,@@@"), webhookBody, signedAt),
		"other version": verify(headers(strings.Replace(webhookSignature, "v1,", "v2,", 1)), webhookBody, signedAt),
		"empty secret":  VerifyWebhookSignatureAt("", headers(webhookSignature), []byte(webhookBody), signedAt, 0),
	}
	for name, err := range refused {
		if !errors.Is(err, ErrWebhookSignature) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := VerifyWebhookSignature(webhookSecret, headers(webhookSignature), []byte(webhookBody)); err == nil {
		t.Fatal("a delivery signed in 2025 is stale now")
	}
}
