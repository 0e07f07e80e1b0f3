"""DKNet inference engine: pipeline, model, IO and CLI."""
