"""What to build: a vLLM release's manifests, what its own sources pin, where a site fetches each input, and the
`release new / check / watch` train that writes them. Imports neither gracectl.image nor gracectl.tags."""
