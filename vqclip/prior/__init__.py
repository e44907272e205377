"""The BART prior (DALL-E mini's text → image-token model): model, tokenizers, data, training, sampling."""
