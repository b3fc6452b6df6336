package likeness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	inferencev1 "github.com/likeness-ai/likeness/clients/go/gen/likeness/inference/v1"
	typev1 "github.com/likeness-ai/likeness/clients/go/gen/likeness/type/v1"
)

// Image is one whole generated image, reassembled from its chunks.
type Image struct {
	// Index of the image in the request, from 0.
	Index int32
	// Seed that reproduces the image.
	Seed int64
	// Encoding of Data.
	Format typev1.ImageFormat
	// Size in pixels.
	Width, Height int32
	// The encoded image (PNG, JPEG or WebP).
	Data []byte
	// GalleryPromptID is the gallery entry the image was recorded as, when the request recorded it.
	GalleryPromptID string
}

// Extension is the file extension of the image's encoding, for example "png".
func (i *Image) Extension() string {
	switch i.Format {
	case typev1.ImageFormat_IMAGE_FORMAT_JPEG:
		return "jpg"
	case typev1.ImageFormat_IMAGE_FORMAT_WEBP:
		return "webp"
	default:
		return "png"
	}
}

// ImageAssembler joins the chunks of a GenerateImages stream into whole images. Chunks of different images may
// interleave; chunks of one image arrive in order (the server guarantees it), so a gap or a duplicate means a
// broken stream and is reported instead of returning a corrupt image. The zero value is ready to use.
type ImageAssembler struct {
	parts     map[int32]*bytes.Buffer
	next      map[int32]int32
	completed map[int32]bool
}

// Add takes the next chunk and returns the whole image when it was the image's last chunk, else nil.
func (a *ImageAssembler) Add(chunk *inferencev1.ImageChunk) (*Image, error) {
	if a.parts == nil {
		a.parts, a.next, a.completed = map[int32]*bytes.Buffer{}, map[int32]int32{}, map[int32]bool{}
	}
	index := chunk.GetImageIndex()
	if a.completed[index] {
		return nil, fmt.Errorf("likeness: stream sent chunk %d of image %d after its last chunk", chunk.GetChunkIndex(), index)
	}
	if chunk.GetChunkIndex() != a.next[index] {
		return nil, fmt.Errorf("likeness: stream sent chunk %d of image %d, expected chunk %d",
			chunk.GetChunkIndex(), index, a.next[index])
	}
	buffer, ok := a.parts[index]
	if !ok {
		buffer = &bytes.Buffer{}
		a.parts[index] = buffer
	}
	buffer.Write(chunk.GetData())
	a.next[index]++
	if !chunk.GetLast() {
		return nil, nil
	}
	delete(a.parts, index)
	delete(a.next, index)
	a.completed[index] = true
	return &Image{
		Index:           index,
		Seed:            chunk.GetSeed(),
		Format:          chunk.GetFormat(),
		Width:           chunk.GetWidth(),
		Height:          chunk.GetHeight(),
		Data:            buffer.Bytes(),
		GalleryPromptID: chunk.GetGalleryPromptId(),
	}, nil
}

// Finish reports an error when the stream ended with images still incomplete.
func (a *ImageAssembler) Finish() error {
	if len(a.parts) == 0 {
		return nil
	}
	pending := make([]int, 0, len(a.parts))
	for index := range a.parts {
		pending = append(pending, int(index))
	}
	sort.Ints(pending)
	return fmt.Errorf("likeness: stream ended before images %v were complete", pending)
}

// GenerateResult is everything one GenerateImages call returned.
type GenerateResult struct {
	Accepted *inferencev1.Accepted
	// Images in the order they completed.
	Images   []*Image
	Warnings []string
	Summary  *inferencev1.Summary
}

// CollectImages reads a GenerateImages stream to its end and returns the reassembled images with the accepted,
// warning and summary messages. onProgress, when not nil, is called with each progress message as it arrives.
// A failed call returns an *Error (the status with its details); a broken stream (a gap in the chunks, an
// image left incomplete) a plain error, never a truncated image.
func CollectImages(stream inferencev1.InferenceService_GenerateImagesClient, onProgress func(*inferencev1.Progress)) (*GenerateResult, error) {
	result := &GenerateResult{}
	var assembler ImageAssembler
	for {
		response, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return result, wrap(err, stream.Trailer())
		}
		switch event := response.GetEvent().(type) {
		case *inferencev1.GenerateImagesResponse_Accepted:
			result.Accepted = event.Accepted
		case *inferencev1.GenerateImagesResponse_Progress:
			if onProgress != nil {
				onProgress(event.Progress)
			}
		case *inferencev1.GenerateImagesResponse_ImageChunk:
			image, err := assembler.Add(event.ImageChunk)
			if err != nil {
				return result, err
			}
			if image != nil {
				result.Images = append(result.Images, image)
			}
		case *inferencev1.GenerateImagesResponse_Warning:
			result.Warnings = append(result.Warnings, event.Warning.GetMessage())
		case *inferencev1.GenerateImagesResponse_Summary:
			result.Summary = event.Summary
		}
	}
	return result, assembler.Finish()
}

// Generate runs a GenerateImages call to its end and returns the whole images with the accepted, warning and
// summary messages; onProgress, when not nil, sees each denoising step. Cancelling ctx cancels the generation
// on the server within one step.
func (c *Clients) Generate(
	ctx context.Context, request *inferencev1.GenerateImagesRequest, onProgress func(*inferencev1.Progress),
) (*GenerateResult, error) {
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel() // a broken stream stops the generation on the server
	stream, err := c.Inference.GenerateImages(callCtx, request)
	if err != nil {
		return nil, wrap(err, nil)
	}
	return CollectImages(stream, onProgress)
}
