"""Loading the models: VQGANs (taming, min-dalle), CLIP (open_clip), the registry and downloads."""
