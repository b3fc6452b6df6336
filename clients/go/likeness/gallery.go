package likeness

import (
	"bytes"
	"context"
	"errors"
	"io"

	galleryv1 "github.com/likeness-ai/likeness/clients/go/gen/likeness/gallery/v1"
)

// SearchPrompts searches recorded and shared prompts, best matches first: one page (follow NextPageToken). Each
// result carries its WebP thumbnail when it has an image; GetPromptImage fetches the full one. A nil request
// lists the most used and newest prompts.
func (c *Clients) SearchPrompts(ctx context.Context, request *galleryv1.SearchPromptsRequest) (*galleryv1.SearchPromptsResponse, error) {
	if request == nil {
		request = &galleryv1.SearchPromptsRequest{}
	}
	return unary(ctx, c.Gallery.SearchPrompts, request)
}

// GetPrompt returns one prompt record.
func (c *Clients) GetPrompt(ctx context.Context, promptID string) (*galleryv1.PromptRecord, error) {
	response, err := unary(ctx, c.Gallery.GetPrompt, &galleryv1.GetPromptRequest{PromptId: promptID})
	return response.GetPrompt(), err
}

// RecordPrompt records a prompt with its parameters (and optionally its image); response.Existing is true
// when an identical prompt was already recorded.
func (c *Clients) RecordPrompt(ctx context.Context, request *galleryv1.RecordPromptRequest) (*galleryv1.RecordPromptResponse, error) {
	return unary(ctx, c.Gallery.RecordPrompt, request)
}

// ListTemplates returns the prompt templates (each with a "{subject}" placeholder) of category, or all of them
// when category is empty.
func (c *Clients) ListTemplates(ctx context.Context, category string) ([]*galleryv1.Template, error) {
	response, err := unary(ctx, c.Gallery.ListTemplates, &galleryv1.ListTemplatesRequest{Category: category})
	return response.GetTemplates(), err
}

// GetPromptImage returns the full image of a prompt and its media type ("image/png", ...), joined from the
// stream's chunks; a stream that ends before the last chunk is an error.
func (c *Clients) GetPromptImage(ctx context.Context, promptID string) (data []byte, mediaType string, err error) {
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Gallery.GetPromptImage(callCtx, &galleryv1.GetPromptImageRequest{PromptId: promptID})
	if err != nil {
		return nil, "", wrap(err, nil)
	}
	var image bytes.Buffer
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, "", errors.New("likeness: the prompt image stream ended before its last chunk")
		}
		if err != nil {
			return nil, "", wrap(err, stream.Trailer())
		}
		if mediaType == "" {
			mediaType = chunk.GetMediaType()
		}
		image.Write(chunk.GetData())
		if chunk.GetLast() {
			return image.Bytes(), mediaType, nil
		}
	}
}
