// embed: the sentence embedding of one text's token ids, from an artifact exported with
// `hf-torchscript export sentence-transformers/all-MiniLM-L6-v2 out/minilm` (task sentence-embedding).
//   embed out/minilm 101 7592 2088 102
#include "hf_torchscript.hpp"

#include <iostream>

int main(int argc, char** argv) try {
  if (argc < 3) return std::cerr << "usage: embed OUTPUT_DIR TOKEN_ID...\n", 2;
  hf_torchscript::Model model(argv[1]);  // model.pt + manifest.json, checked against each other
  std::vector<int64_t> ids;
  for (int i = 2; i < argc; ++i) ids.push_back(std::stoll(argv[i]));  // ids from your tokenizer
  const auto n = static_cast<int64_t>(ids.size());
  hf_torchscript::NamedTensors inputs;  // by the names in manifest.json "inputs"
  inputs["input_ids"] = torch::tensor(ids).reshape({1, n});
  inputs["attention_mask"] = torch::ones({1, n}, torch::kLong);
  // token_type_ids (BERT-like models) is left out: Model::run fills zeros, as transformers does.
  torch::Tensor embedding = model.run(inputs).at("sentence_embedding")[0];  // (384,), unit length
  std::cout.precision(9);  // float32 round trip
  for (int64_t i = 0; i < embedding.size(0); ++i) std::cout << (i ? " " : "") << embedding[i].item<float>();
  std::cout << "\n";
} catch (const std::exception& e) {  // hf_torchscript::Error: one line saying what to fix
  std::cerr << "error: " << e.what() << "\n";
  return 1;
}
