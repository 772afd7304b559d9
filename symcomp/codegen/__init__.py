"""Stage 3: code generation. Render a spec's graph into a standalone PyTorch package."""
