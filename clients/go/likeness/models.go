package likeness

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"

	inferencev1 "github.com/likeness-ai/likeness/clients/go/gen/likeness/inference/v1"
)

// ListSubjectModels lists subject models in shared storage with their load state on the replica that answers,
// newest first: only those of baseModel unless it is empty, only loaded ones when loadedOnly.
func (c *Clients) ListSubjectModels(ctx context.Context, baseModel string, loadedOnly bool) ([]*inferencev1.SubjectModelStatus, error) {
	request := &inferencev1.ListSubjectModelsRequest{BaseModel: baseModel, LoadedOnly: loadedOnly}
	response, err := unary(ctx, c.Inference.ListSubjectModels, request)
	return response.GetModels(), err
}

// GetSubjectModel returns one subject model with its load state (NotFound when it does not exist).
func (c *Clients) GetSubjectModel(ctx context.Context, modelID string) (*inferencev1.SubjectModelStatus, error) {
	response, err := unary(ctx, c.Inference.GetSubjectModel, &inferencev1.GetSubjectModelRequest{ModelId: modelID})
	return response.GetModel(), err
}

// DeleteSubjectModel deletes a subject model with its files and the gallery entries generated with it.
func (c *Clients) DeleteSubjectModel(ctx context.Context, modelID string) (*inferencev1.DeleteSubjectModelResponse, error) {
	return unary(ctx, c.Inference.DeleteSubjectModel, &inferencev1.DeleteSubjectModelRequest{ModelId: modelID})
}

// LoadSubjectModel pre-warms a subject model on the replica that answers, so its first generation does not wait.
func (c *Clients) LoadSubjectModel(ctx context.Context, modelID string) (*inferencev1.SubjectModelStatus, error) {
	response, err := unary(ctx, c.Inference.LoadSubjectModel, &inferencev1.LoadSubjectModelRequest{ModelId: modelID})
	return response.GetModel(), err
}

// UnloadSubjectModel evicts a subject model from the replica that answers (it loads again on its next use).
func (c *Clients) UnloadSubjectModel(ctx context.Context, modelID string) (*inferencev1.SubjectModelStatus, error) {
	response, err := unary(ctx, c.Inference.UnloadSubjectModel, &inferencev1.UnloadSubjectModelRequest{ModelId: modelID})
	return response.GetModel(), err
}

// GetServerStatus returns the loaded models, cache memory and queue of the inference service.
func (c *Clients) GetServerStatus(ctx context.Context) (*inferencev1.GetServerStatusResponse, error) {
	return unary(ctx, c.Inference.GetServerStatus, &inferencev1.GetServerStatusRequest{})
}

// DownloadedFile is one file of a subject model written by DownloadSubjectModel.
type DownloadedFile struct {
	// File is the server's header: path in the model's folder, kind, size and SHA-256.
	File *inferencev1.ArtifactFile
	// Path is where it was written.
	Path string
}

// DownloadSubjectModel writes a subject model's files under dir (created when missing), keeping their paths
// relative to the model's folder: all of them, or only those of kinds. The stream sends each file's header
// then its data chunks; each file is written to a temporary name, checked against the header's size and
// SHA-256, and renamed into place only when both match. A path that would leave dir (absolute, with "..", or
// through a symbolic link) is refused, as is data that comes without a header. On an error the files already
// completed stay and the one in progress is removed.
func (c *Clients) DownloadSubjectModel(
	ctx context.Context, modelID, dir string, kinds ...inferencev1.ArtifactKind,
) ([]DownloadedFile, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("likeness: download folder: %w", err)
	}
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel() // a refused file stops the stream on the server
	stream, err := c.Inference.DownloadSubjectModel(callCtx, &inferencev1.DownloadSubjectModelRequest{ModelId: modelID, Kinds: kinds})
	if err != nil {
		return nil, wrap(err, nil)
	}
	var done []DownloadedFile
	var current *downloading
	defer func() { current.abort() }()
	for {
		message, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return done, wrap(err, stream.Trailer())
		}
		switch payload := message.GetPayload().(type) {
		case *inferencev1.DownloadSubjectModelResponse_File:
			if current != nil {
				file, err := current.finish()
				if err != nil {
					return done, err
				}
				done = append(done, file)
			}
			if current, err = startDownload(dir, payload.File); err != nil {
				return done, err
			}
		case *inferencev1.DownloadSubjectModelResponse_Data:
			if current == nil {
				return done, errors.New("likeness: download sent data before any file header")
			}
			if err := current.write(payload.Data); err != nil {
				return done, err
			}
		}
	}
	if current != nil {
		file, err := current.finish()
		if err != nil {
			return done, err
		}
		done = append(done, file)
	}
	return done, nil
}

// downloading is the file being written: a temporary file next to its target.
type downloading struct {
	header  *inferencev1.ArtifactFile
	target  string
	tmp     *os.File
	hash    hash.Hash
	written int64
}

func startDownload(dir string, header *inferencev1.ArtifactFile) (*downloading, error) {
	target, err := SafeJoin(dir, header.GetPath())
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return nil, fmt.Errorf("likeness: download %s: %w", header.GetPath(), err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".*.part")
	if err != nil {
		return nil, fmt.Errorf("likeness: download %s: %w", header.GetPath(), err)
	}
	return &downloading{header: header, target: target, tmp: tmp, hash: sha256.New()}, nil
}

func (d *downloading) write(data []byte) error {
	d.written += int64(len(data))
	if d.written > d.header.GetSizeBytes() {
		return fmt.Errorf("likeness: download %s: more than the announced %d bytes", d.header.GetPath(), d.header.GetSizeBytes())
	}
	d.hash.Write(data)
	if _, err := d.tmp.Write(data); err != nil {
		return fmt.Errorf("likeness: download %s: %w", d.header.GetPath(), err)
	}
	return nil
}

// finish checks the size and the SHA-256 and moves the file into place.
func (d *downloading) finish() (DownloadedFile, error) {
	path := d.header.GetPath()
	if d.written != d.header.GetSizeBytes() {
		return DownloadedFile{}, fmt.Errorf("likeness: download %s: got %d bytes, the header announced %d", path, d.written, d.header.GetSizeBytes())
	}
	if got := hex.EncodeToString(d.hash.Sum(nil)); !strings.EqualFold(got, d.header.GetSha256()) {
		return DownloadedFile{}, fmt.Errorf("likeness: download %s: SHA-256 %s, the header announced %s", path, got, d.header.GetSha256())
	}
	if err := d.tmp.Close(); err != nil {
		return DownloadedFile{}, fmt.Errorf("likeness: download %s: %w", path, err)
	}
	if err := os.Rename(d.tmp.Name(), d.target); err != nil {
		return DownloadedFile{}, fmt.Errorf("likeness: download %s: %w", path, err)
	}
	d.tmp = nil
	return DownloadedFile{File: d.header, Path: d.target}, nil
}

// abort removes the temporary file of a download that did not finish; safe on nil and after finish.
func (d *downloading) abort() {
	if d == nil || d.tmp == nil {
		return
	}
	d.tmp.Close()
	os.Remove(d.tmp.Name())
	d.tmp = nil
}

// SafeJoin is dir joined with rel, a slash-separated path from a server, refused when it would leave dir: an
// empty or absolute path, a ".." element, a Windows volume or backslash, a NUL, or a folder on the way that is
// a symbolic link.
func SafeJoin(dir, rel string) (string, error) {
	refuse := func(why string) (string, error) {
		return "", fmt.Errorf("likeness: refusing the path %q: %s", rel, why)
	}
	switch {
	case rel == "":
		return refuse("it is empty")
	case strings.ContainsAny(rel, "\x00\\"):
		return refuse("it contains a NUL or a backslash")
	case strings.HasPrefix(rel, "/") || filepath.IsAbs(rel) || filepath.VolumeName(rel) != "":
		return refuse("it is absolute")
	}
	for _, element := range strings.Split(rel, "/") {
		if element == ".." {
			return refuse("it leaves the download folder")
		}
	}
	base := filepath.Clean(dir)
	target := filepath.Join(base, filepath.FromSlash(rel))
	inside, err := filepath.Rel(base, target)
	if err != nil || inside == "." || inside == ".." || strings.HasPrefix(inside, ".."+string(filepath.Separator)) {
		return refuse("it leaves the download folder")
	}
	// A folder on the way that is a symbolic link could point anywhere.
	walked := base
	for _, element := range strings.Split(filepath.Dir(inside), string(filepath.Separator)) {
		if element == "." {
			continue
		}
		walked = filepath.Join(walked, element)
		info, err := os.Lstat(walked)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("likeness: download %s: %w", rel, err)
		}
		if info.Mode()&os.ModeSymlink != 0 {
			return refuse("a folder on its way is a symbolic link")
		}
	}
	return target, nil
}
