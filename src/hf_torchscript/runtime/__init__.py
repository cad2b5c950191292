"""Running an artifact with torch + tokenizers only: ``model.load`` (text in, task outputs out), the artifact's
read side (manifest schema, sha256 checks, model.pt / model.pt2), and the C++ runner's build."""
