// embed: sentence embeddings, from an artifact exported with
// `hf-torchscript export sentence-transformers/all-MiniLM-L6-v2 out/minilm` (task sentence-embedding).
//   embed out/minilm "A man is eating food." "Someone plays music."   # texts: out/minilm/tokenizer.json tokenizes
//   embed out/minilm --ids 101 7592 2088 102                          # token ids from a tokenizer of your own
// One line per text: the embedding's values, space-separated.
#include "hf_torchscript.hpp"

#include <iostream>

int main(int argc, char** argv) try {
  if (argc < 3) return std::cerr << "usage: embed OUTPUT_DIR TEXT... | embed OUTPUT_DIR --ids TOKEN_ID...\n", 2;
  hf_torchscript::Model model(argv[1]);  // model.pt + manifest.json + tokenizer.json, checked together
  torch::Tensor embeddings;
  if (std::string(argv[2]) == "--ids") {
    std::vector<int64_t> ids;
    for (int i = 3; i < argc; ++i) ids.push_back(std::stoll(argv[i]));
    const auto n = static_cast<int64_t>(ids.size());
    hf_torchscript::NamedTensors inputs;  // by the names in manifest.json "inputs"
    inputs["input_ids"] = torch::tensor(ids).reshape({1, n});
    inputs["attention_mask"] = torch::ones({1, n}, torch::kLong);
    // token_type_ids (BERT-like models) is left out: Model::run fills zeros, as transformers does.
    embeddings = model.run(inputs).at("sentence_embedding");
  } else {
    // Tokenized in C++ with the artifact's own tokenizer.json (hts_tokenizer.hpp), padded as one batch.
    embeddings = model.embed(std::vector<std::string>(argv + 2, argv + argc));  // (texts, 384), unit length
  }
  std::cout.precision(9);  // float32 round trip
  for (int64_t r = 0; r < embeddings.size(0); ++r) {
    for (int64_t i = 0; i < embeddings.size(1); ++i) std::cout << (i ? " " : "") << embeddings[r][i].item<float>();
    std::cout << "\n";
  }
} catch (const std::exception& e) {  // hf_torchscript::Error: one line saying what to fix
  std::cerr << "error: " << e.what() << "\n";
  return 1;
}
