package likeness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	trainerv1 "github.com/likeness-ai/likeness/clients/go/gen/likeness/trainer/v1"
)

// UploadChunkBytes is how many photo bytes one PrepareDataset message carries: small enough to keep memory
// flat, large enough to keep the overhead low.
const UploadChunkBytes = 1024 * 1024

// Photo is one photo to upload: a file (read lazily, in chunks) or bytes in memory.
type Photo struct {
	// Name is the file name the server reports it by; names must be unique within one upload. Empty: the base
	// name of Path, or photo-NNN for bytes.
	Name string
	// Path of the file to read; when empty, Data is uploaded.
	Path string
	// Data is the encoded image (JPEG, PNG, WebP, ...) when Path is empty.
	Data []byte
	// Caption replaces the instance prompt for this photo; optional.
	Caption string
}

// PhotoFile is the photo in the file at path.
func PhotoFile(path string) Photo {
	return Photo{Path: path}
}

// PhotoFiles are the photos in these files.
func PhotoFiles(paths ...string) []Photo {
	photos := make([]Photo, len(paths))
	for i, path := range paths {
		photos[i] = Photo{Path: path}
	}
	return photos
}

// PhotoBytes is a photo in memory, reported as name.
func PhotoBytes(name string, data []byte) Photo {
	return Photo{Name: name, Data: data}
}

// name is the photo's file name in the upload.
func (p Photo) name(position int) string {
	switch {
	case p.Name != "":
		return p.Name
	case p.Path != "":
		return filepath.Base(p.Path)
	default:
		return fmt.Sprintf("photo-%03d", position)
	}
}

// photoNames are the photos' names, refused when two are the same: the server joins chunks by file name, so
// two photos with one name would be merged into garbage.
func photoNames(photos []Photo) ([]string, error) {
	names := make([]string, len(photos))
	count := map[string]int{}
	for i, photo := range photos {
		names[i] = photo.name(i)
		count[names[i]]++
	}
	var repeated []string
	for name, n := range count {
		if n > 1 {
			repeated = append(repeated, name)
		}
	}
	if len(repeated) > 0 {
		sort.Strings(repeated)
		return nil, invalid("photos", "photo file names must be unique; repeated: %v", repeated)
	}
	return names, nil
}

// PrepareDataset uploads photos and returns the prepared dataset with its per-photo report and contact sheet.
// The upload is one PrepareDataset client stream: options (nil: the defaults) first, then each photo in chunks
// of at most UploadChunkBytes; files are read as they are sent, so a large upload never sits in memory whole.
// Photos already in shared storage or at a URL go in options.PhotoUris instead.
func (c *Clients) PrepareDataset(ctx context.Context, photos []Photo, options *trainerv1.DatasetOptions) (*trainerv1.PrepareDatasetResponse, error) {
	names, err := photoNames(photos)
	if err != nil {
		return nil, err
	}
	if options == nil {
		options = &trainerv1.DatasetOptions{}
	}
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the call when reading a photo fails half-way
	stream, err := c.Trainer.PrepareDataset(callCtx)
	if err != nil {
		return nil, wrap(err, nil)
	}
	var sendErr error
	send := func(message *trainerv1.PrepareDatasetRequest) (stop bool) {
		sendErr = stream.Send(message)
		return sendErr != nil
	}
	stopped := send(&trainerv1.PrepareDatasetRequest{Payload: &trainerv1.PrepareDatasetRequest_Options{Options: options}})
	for i := 0; i < len(photos) && !stopped; i++ {
		if stopped, err = sendPhoto(photos[i], names[i], send); err != nil {
			return nil, err
		}
	}
	if sendErr != nil && !errors.Is(sendErr, io.EOF) {
		return nil, wrap(sendErr, nil) // the call failed on this side (a message over the limit)
	}
	// After io.EOF from Send (the server ended the call early) CloseAndRecv has the call's status.
	response, err := stream.CloseAndRecv()
	return response, wrap(err, stream.Trailer())
}

// sendPhoto sends one photo's chunks, the caption on the first; an empty photo is one empty chunk, so it gets
// a report (rejected as empty) instead of vanishing.
func sendPhoto(photo Photo, name string, send func(*trainerv1.PrepareDatasetRequest) bool) (stopped bool, err error) {
	caption := photo.Caption
	chunk := func(data []byte) bool {
		message := &trainerv1.PrepareDatasetRequest{Payload: &trainerv1.PrepareDatasetRequest_PhotoChunk{
			PhotoChunk: &trainerv1.PhotoChunk{FileName: name, Data: data, Caption: caption},
		}}
		caption = ""
		return send(message)
	}
	if photo.Path == "" {
		data := photo.Data
		for first := true; first || len(data) > 0; first = false {
			n := len(data)
			if n > UploadChunkBytes {
				n = UploadChunkBytes
			}
			if chunk(data[:n]) {
				return true, nil
			}
			data = data[n:]
		}
		return false, nil
	}
	file, err := os.Open(photo.Path)
	if err != nil {
		return false, fmt.Errorf("likeness: photo %s: %w", photo.Path, err)
	}
	defer file.Close()
	for first := true; ; first = false {
		buffer := make([]byte, UploadChunkBytes)
		n, err := io.ReadFull(file, buffer)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			if n > 0 || first {
				return chunk(buffer[:n]), nil
			}
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("likeness: photo %s: %w", photo.Path, err)
		}
		if chunk(buffer[:n]) {
			return true, nil
		}
	}
}

// InlinePhotos are photos as CreateTrainingJobRequest.Photos, files read whole; for small sets (the request
// must stay under the message limit), else upload them with PrepareDataset and set the spec's DatasetId.
func InlinePhotos(photos []Photo) ([]*trainerv1.Photo, error) {
	names, err := photoNames(photos)
	if err != nil {
		return nil, err
	}
	out := make([]*trainerv1.Photo, len(photos))
	for i, photo := range photos {
		data := photo.Data
		if photo.Path != "" {
			if data, err = os.ReadFile(photo.Path); err != nil {
				return nil, fmt.Errorf("likeness: photo %s: %w", photo.Path, err)
			}
		}
		out[i] = &trainerv1.Photo{FileName: names[i], Data: data, Caption: photo.Caption}
	}
	return out, nil
}

// GetDataset returns a prepared dataset with its per-photo report.
func (c *Clients) GetDataset(ctx context.Context, datasetID string) (*trainerv1.Dataset, error) {
	response, err := unary(ctx, c.Trainer.GetDataset, &trainerv1.GetDatasetRequest{DatasetId: datasetID})
	return response.GetDataset(), err
}
