// hf_torchscript.hpp: load an hf-torchscript artifact (OUTPUT_DIR/model.pt + manifest.json) from
// C++ and run it with named, checked inputs. Header-only; needs libtorch and nlohmann/json.
//
//     hf_torchscript::Model model("out/");                  // loads and cross-checks the artifact
//     auto outputs = model.run({{"input_ids", ids}, {"attention_mask", mask}});  // token_type_ids: zeros
//     torch::Tensor emb = outputs.at("sentence_embedding");  // (batch_size, 384)
//
// Every failure (missing files, a file whose sha256 differs from manifest.json, a manifest that
// does not belong to the model file, wrong input names, dtype or rank, a length over the artifact's
// maximum, a token id outside the vocabulary) throws hf_torchscript::Error with a one-line message
// that says what was wrong and what to do.
//
// Both formats load the same way: TorchScript (model.pt, torch::jit::load) and AOTInductor packages
// (model.pt2, manifest "format": "aoti-pt2", torch::inductor::AOTIModelPackageLoader). A model.pt
// checks its inputs itself; a model.pt2 cannot (its kernels trust their inputs: an over-long row
// aborts the process), so this header checks them from the manifest, with the same words.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/script.h>

#if __has_include(<torch/csrc/inductor/aoti_package/model_package_loader.h>)
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#define HF_TORCHSCRIPT_HAS_AOTI 1
#else
#define HF_TORCHSCRIPT_HAS_AOTI 0
#endif

#include <nlohmann/json.hpp>

#include "hts_tokenizer.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace hf_torchscript {

// The one error type this header throws on purpose.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One entry of the manifest's "inputs" or "outputs": name, dtype ("int64", "float32", ...) and
// shape, whose axes are names ("batch_size", "sequence_length") or fixed sizes (384); an input's
// "default" ("zeros" for token_type_ids) says it may be left out of Model::run.
struct TensorSpec {
  std::string name;
  std::string dtype;
  std::vector<nlohmann::json> shape;
  std::string default_value;  // "" (required) or "zeros"
  bool has_range = false;  // "range": [lo, hi) the values may take: token ids inside the vocabulary, masks 0/1
  int64_t lo = 0, hi = 0;
};

using NamedTensors = std::map<std::string, torch::Tensor>;

constexpr int kFormatVersion = 2;  // the newest manifest format this header reads

// "int64" -> torch::kLong, ...; the dtype names are the manifest's (numpy-style).
inline torch::ScalarType scalar_type(const std::string& dtype) {
  if (dtype == "int64") return torch::kLong;
  if (dtype == "int32") return torch::kInt;
  if (dtype == "float32") return torch::kFloat;
  if (dtype == "float16") return torch::kHalf;
  if (dtype == "bfloat16") return torch::kBFloat16;
  if (dtype == "float64") return torch::kDouble;
  if (dtype == "bool") return torch::kBool;
  throw Error("manifest dtype '" + dtype + "' is not one this runner knows (int64, int32, float32, float16, "
              "bfloat16, float64, bool); upgrade hf_torchscript.hpp");
}

inline std::string dtype_name(torch::ScalarType t) {
  switch (t) {
    case torch::kLong: return "int64";
    case torch::kInt: return "int32";
    case torch::kFloat: return "float32";
    case torch::kHalf: return "float16";
    case torch::kBFloat16: return "bfloat16";
    case torch::kDouble: return "float64";
    case torch::kBool: return "bool";
    default: return c10::toString(t);
  }
}

// JSON from untrusted places is bounded before it is parsed: nesting beyond this many levels is
// refused (an input needs at most 4: batch, choices, length, features; a manifest about 6), so
// nothing recursive (checks, dump, destruction) can run out of stack on a hostile file.
constexpr size_t kMaxJsonDepth = 64;

// Throws Error("<what> nests deeper than ...; <fix>") if ``text`` has more than ``max_depth`` nested
// arrays/objects; brackets inside strings do not count. Linear, no allocation.
inline void check_json_depth(const std::string& text, const std::string& what, const std::string& fix,
                             size_t max_depth = kMaxJsonDepth) {
  size_t depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth)
        throw Error(what + " nests deeper than " + std::to_string(max_depth) +
                    " levels of [ and {; " + fix);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
}

// Reads at most ``max_bytes`` from ``in`` (a file or stdin); a longer stream is an Error.
inline std::string read_bounded(std::istream& in, size_t max_bytes, const std::string& what) {
  std::string text;
  std::vector<char> chunk(1 << 16);
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    text.append(chunk.data(), static_cast<size_t>(in.gcount()));
    if (text.size() > max_bytes)
      throw Error(what + " is larger than " + std::to_string(max_bytes) + " bytes; split it into smaller batches" +
                  " (hts_run: or raise --max-input-bytes)");
  }
  return text;
}

inline std::string join(const std::vector<std::string>& parts, const std::string& sep = ", ") {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? sep : "") + parts[i];
  return out;
}

inline std::string shape_text(c10::IntArrayRef sizes) {
  std::vector<std::string> parts;
  for (auto s : sizes) parts.push_back(std::to_string(s));
  return "[" + join(parts) + "]";
}

inline std::string axes_text(const std::vector<nlohmann::json>& shape) {
  std::vector<std::string> parts;
  for (const auto& ax : shape) parts.push_back(ax.is_string() ? ax.get<std::string>() : ax.dump());
  return join(parts);
}

// TorchScript errors carry a serialized traceback; the exported module's own checks raise
// "hf-torchscript: <message>", which is the part a user needs. Anything else: its last line.
// The marker includes the exception type so that the same words quoted in the traceback's source
// listing (printed for any error inside the dispatcher) are not taken for the message.
inline std::string script_error_message(const std::string& what) {
  const std::string marker = "Error: hf-torchscript: ";
  auto pos = what.rfind(marker);
  if (pos != std::string::npos) {
    auto rest = what.substr(pos + marker.size());
    return rest.substr(0, rest.find('\n'));
  }
  std::istringstream lines(what);
  std::string line, last;
  while (std::getline(lines, line))
    if (line.find_first_not_of(" \t\r") != std::string::npos) last = line.substr(line.find_first_not_of(" \t\r"));
  return "the exported module failed: " + (last.empty() ? std::string("unknown error") : last);
}

// SHA-256 (FIPS 180-4), self-contained: libtorch exposes none publicly. Used to check every file
// against manifest.json's "files" before anything is loaded; tests compare it with Python's hashlib.
class Sha256 {
 public:
  Sha256() { reset(); }

  void update(const unsigned char* data, size_t n) {
    while (n > 0) {
      const size_t take = std::min(n, sizeof(block_) - fill_);
      std::memcpy(block_ + fill_, data, take);
      fill_ += take, data += take, n -= take;
      if (fill_ == sizeof(block_)) {
        compress();
        bits_ += 512;
        fill_ = 0;
      }
    }
  }

  // The digest as 64 lowercase hex digits (the manifest's spelling); the object is reset after.
  std::string hexdigest() {
    const uint64_t total = bits_ + 8ull * fill_;
    const unsigned char one = 0x80, zero = 0x00;
    update(&one, 1);
    while (fill_ != 56) update(&zero, 1);
    unsigned char length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(total >> (56 - 8 * i));
    update(length, 8);
    static const char* kHex = "0123456789abcdef";
    std::string out;
    for (uint32_t word : h_)
      for (int shift = 28; shift >= 0; shift -= 4) out.push_back(kHex[(word >> shift) & 0xf]);
    reset();
    return out;
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

  void reset() {
    static const uint32_t kInit[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    std::copy(kInit, kInit + 8, h_);
    bits_ = 0;
    fill_ = 0;
  }

  void compress() {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (uint32_t(block_[4 * i]) << 24) | (uint32_t(block_[4 * i + 1]) << 16) |
             (uint32_t(block_[4 * i + 2]) << 8) | uint32_t(block_[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h_[0] += a, h_[1] += b, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
  }

  uint32_t h_[8];
  unsigned char block_[64];
  uint64_t bits_ = 0;  // message bits in completed blocks
  size_t fill_ = 0;    // bytes in block_
};

// The sha256 of a file's bytes, as lowercase hex.
inline std::string sha256_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read " + path);
  Sha256 sha;
  std::vector<char> buffer(1 << 20);
  while (f) {
    f.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    sha.update(reinterpret_cast<const unsigned char*>(buffer.data()), static_cast<size_t>(f.gcount()));
  }
  if (f.bad()) throw Error("cannot read " + path);
  return sha.hexdigest();
}

// Mean of token embeddings over the positions where attention_mask is 1: (B, L, H) -> (B, H).
// Artifacts exported with task sentence-embedding already pool inside model.pt; this is for
// feature-extraction artifacts whose last_hidden_state you pool yourself.
inline torch::Tensor mean_pool(const torch::Tensor& token_embeddings, const torch::Tensor& attention_mask) {
  auto mask = attention_mask.unsqueeze(-1).to(token_embeddings.scalar_type());
  return (token_embeddings * mask).sum(1) / mask.sum(1).clamp_min(1e-9);
}

class Model {
 public:
  // Loads OUTPUT_DIR/manifest.json and OUTPUT_DIR/model.pt and checks that they belong together:
  // the sha256 of every file manifest.json lists (model.pt, tokenizer files) before loading
  // anything, the manifest embedded in model.pt at export time, and forward's argument names.
  explicit Model(const std::string& directory, torch::Device device = torch::kCPU)
      : directory_(directory), device_(device) {
    namespace fs = std::filesystem;
    const fs::path dir(directory);
    if (!fs::is_directory(dir))
      throw Error("artifact directory '" + directory + "' does not exist; export one with `hf-torchscript export`");
    const fs::path manifest_file = dir / "manifest.json";
    if (!fs::is_regular_file(manifest_file))
      throw Error("'" + directory + "' has no manifest.json: not an hf-torchscript artifact (or an unfinished one)");
    manifest_ = parse_json_file(manifest_file.string());
    read_manifest(manifest_file.string());
    if (format_ != "torchscript" && format_ != "aoti-pt2")
      throw Error(manifest_file.string() + " has format '" + format_ + "'; this hf_torchscript.hpp reads torchscript "
                  "and aoti-pt2: upgrade it");
    const std::string model_name = format_ == "aoti-pt2" ? "model.pt2" : "model.pt";
    const fs::path model_file = dir / model_name;
    if (!fs::is_regular_file(model_file))
      throw Error("'" + directory + "' has no " + model_name + "; re-export the model");
    verify_files(dir, manifest_file.string(), model_name);
    if (format_ == "aoti-pt2") {
      load_pt2(model_file.string(), manifest_file.string());
      return;
    }

    torch::jit::ExtraFilesMap extra{{"manifest.json", ""}};
    try {
      module_ = torch::jit::load(model_file.string(), device_, extra);
    } catch (const std::exception& e) {
      std::string what = e.what();
      throw Error("torch::jit::load could not read " + model_file.string() + ": " + what.substr(0, what.find('\n')));
    }
    module_.eval();
    check_belongs_together(extra["manifest.json"], manifest_file.string(), model_file.string());
  }

  const std::string& directory() const { return directory_; }
  const nlohmann::json& manifest() const { return manifest_; }
  const std::vector<TensorSpec>& inputs() const { return inputs_; }
  const std::vector<TensorSpec>& outputs() const { return outputs_; }
  const std::string& task() const { return task_; }
  int64_t max_length() const { return max_length_; }
  int64_t pad_token_id() const { return pad_token_id_; }
  // "torchscript" (model.pt) or "aoti-pt2" (model.pt2).
  const std::string& format() const { return format_; }
  // The TorchScript module (format "torchscript" only).
  torch::jit::Module& module() { return module_; }

  std::vector<std::string> input_names() const { return names(inputs_); }
  std::vector<std::string> output_names() const { return names(outputs_); }

  // Runs forward with inputs by name; returns outputs by name. Every manifest input is needed except
  // those with a "default" (token_type_ids), which are filled as transformers fills them: zeros shaped
  // like a given input with the same axes.
  NamedTensors run(const NamedTensors& inputs) {
    std::vector<std::string> unknown, missing;
    for (const auto& kv : inputs)
      if (!has_input(kv.first)) unknown.push_back(kv.first);
    for (const auto& spec : inputs_)
      if (!inputs.count(spec.name) && spec.default_value.empty()) missing.push_back(spec.name);
    if (!unknown.empty())
      throw Error("unknown input(s) " + join(unknown) + "; this artifact takes " + takes());
    if (!missing.empty())
      throw Error("missing input(s) " + join(missing) + "; this artifact takes " + takes() +
                  " (pad rows with each input's pad_value from manifest.json)");
    std::vector<torch::Tensor> positional;
    for (const auto& spec : inputs_)
      positional.push_back(inputs.count(spec.name) ? inputs.at(spec.name) : default_input(spec, inputs));
    auto out = run_positional(positional);
    NamedTensors named;
    for (size_t i = 0; i < outputs_.size(); ++i) named[outputs_[i].name] = out[i];
    return named;
  }

  // Runs forward with the inputs in manifest order; returns the outputs in manifest order.
  std::vector<torch::Tensor> run_positional(const std::vector<torch::Tensor>& inputs) {
    if (inputs.size() != inputs_.size())
      throw Error("expected " + std::to_string(inputs_.size()) + " tensors (" + join(input_names()) + "), got " +
                  std::to_string(inputs.size()));
    for (size_t i = 0; i < inputs.size(); ++i) check_input(inputs_[i], inputs[i]);
    if (format_ == "aoti-pt2") return run_pt2(inputs);
    std::vector<torch::jit::IValue> args;
    for (const auto& x : inputs) args.emplace_back(x.to(device_));
    torch::jit::IValue result;
    {
      // Inference only: no autograd bookkeeping, like torch.no_grad() in the Python runtime.
      c10::InferenceMode guard;
      try {
        result = module_.forward(args);
      } catch (const std::exception& e) {
        throw Error(script_error_message(e.what()));
      }
    }
    std::vector<torch::Tensor> out;
    if (result.isTuple()) {
      for (const auto& v : result.toTuple()->elements()) out.push_back(v.toTensor());
    } else if (result.isTensor()) {
      out.push_back(result.toTensor());
    } else {
      throw Error("model.pt returned " + result.tagKind() + ", not a tuple of tensors; re-export the model");
    }
    if (out.size() != outputs_.size())
      throw Error("model.pt returned " + std::to_string(out.size()) + " outputs but manifest.json lists " +
                  std::to_string(outputs_.size()) + " (" + join(output_names()) + "); re-export the model");
    return out;
  }

  // ---- text in (the artifact's own tokenizer.json, through hts_tokenizer.hpp) -----------------

  // The artifact's tokenizer, loaded on first use, with no padding and truncation at the artifact's
  // max length (as the Python runtime). Throws Error when the artifact ships no tokenizer, or one
  // whose components the C++ tokenizer lacks (manifest "cpp_tokenizer"); token ids still work then.
  Tokenizer& tokenizer() {
    if (tokenizer_) return *tokenizer_;
    const auto& tok = manifest_.value("tokenizer", nlohmann::json());
    if (!tok.is_object() || !tok.contains("file"))
      throw Error("artifact '" + directory_ + "' ships no tokenizer, so it takes token ids, not text; pass "
                  "input_ids/attention_mask");
    const auto& support = manifest_.value("cpp_tokenizer", nlohmann::json());
    if (support.is_object() && !support.value("supported", true))
      throw Error("artifact '" + directory_ + "' uses tokenizer components the C++ tokenizer does not implement (" +
                  join(support.value("unsupported", std::vector<std::string>{})) +
                  "); tokenize in Python and pass token ids");
    try {
      tokenizer_ = std::make_unique<Tokenizer>(
          Tokenizer::from_file((std::filesystem::path(directory_) / tok["file"].get<std::string>()).string()));
    } catch (const TokenizerError& e) {
      throw Error(e.what());
    }
    tokenizer_->padding.enabled = false;
    tokenizer_->truncation.enabled = false;
    return *tokenizer_;
  }

  // Texts (and optional pairs, one per text) -> the model's inputs, padded to the longest row with the
  // manifest's pad_token_id. Texts longer than max_length are cut to it (LongestFirst for pairs) and
  // counted in `truncated` / `longest` (the Python runtime warns about them).
  struct TextBatch {
    NamedTensors inputs;
    std::vector<Encoding> encodings;  // unpadded, after truncation
    size_t truncated = 0;
    size_t longest = 0;  // the most tokens an input had before truncation
  };

  TextBatch encode(const std::vector<std::string>& texts, const std::vector<std::string>& pairs = {}) {
    if (texts.empty()) throw Error("no input texts; pass at least one string");
    if (!pairs.empty() && pairs.size() != texts.size())
      throw Error(std::to_string(texts.size()) + " texts but " + std::to_string(pairs.size()) +
                  " pairs; pass one pair per text, or none");
    Tokenizer& tok = tokenizer();
    TextBatch batch;
    try {
      for (size_t i = 0; i < texts.size(); ++i) {
        const std::string* pair = pairs.empty() ? nullptr : &pairs[i];
        Encoding e = tok.encode(texts[i], pair);
        if (int64_t(e.ids.size()) > max_length_) {
          ++batch.truncated;
          batch.longest = std::max(batch.longest, e.ids.size());
          tok.truncation.enabled = true;
          tok.truncation.max_length = size_t(max_length_);
          tok.truncation.strategy = "LongestFirst";
          try {
            e = tok.encode(texts[i], pair);
          } catch (...) {
            tok.truncation.enabled = false;
            throw;
          }
          tok.truncation.enabled = false;
        }
        batch.encodings.push_back(std::move(e));
      }
    } catch (const TokenizerError& e) {
      throw Error(e.what());
    }
    size_t L = 0;
    for (const auto& e : batch.encodings) L = std::max(L, e.ids.size());
    const auto n = int64_t(texts.size());
    auto ids = torch::full({n, int64_t(L)}, pad_token_id_, torch::kLong);
    auto mask = torch::zeros({n, int64_t(L)}, torch::kLong);
    auto types = torch::zeros({n, int64_t(L)}, torch::kLong);
    for (int64_t i = 0; i < n; ++i) {
      const auto& e = batch.encodings[size_t(i)];
      for (size_t j = 0; j < e.ids.size(); ++j) {
        ids[i][int64_t(j)] = e.ids[j];
        mask[i][int64_t(j)] = 1;
        types[i][int64_t(j)] = e.type_ids[j];
      }
    }
    batch.inputs["input_ids"] = ids;
    batch.inputs["attention_mask"] = mask;
    if (has_input("token_type_ids")) batch.inputs["token_type_ids"] = types;
    return batch;
  }

  // Runs the model on texts; returns every output by name (rows in text order).
  NamedTensors run_text(const std::vector<std::string>& texts, const std::vector<std::string>& pairs = {}) {
    return run(encode(texts, pairs).inputs);
  }

  // sentence-embedding artifacts: one embedding per text ([texts, dimension]).
  torch::Tensor embed(const std::vector<std::string>& texts) {
    if (task_ != "sentence-embedding")
      throw Error("embed() needs a sentence-embedding artifact; this one is " + task_ + " (use run_text)");
    return run_text(texts).at("sentence_embedding");
  }

  struct Classification {
    std::string label;
    float score = 0;
    std::vector<std::pair<std::string, float>> scores;  // every label, in label-id order
  };

  // text-classification artifacts: softmax over the labels, per text (or pair).
  std::vector<Classification> classify(const std::vector<std::string>& texts,
                                       const std::vector<std::string>& pairs = {}) {
    if (task_ != "text-classification")
      throw Error("classify() needs a text-classification artifact; this one is " + task_ + " (use run_text)");
    auto probs = run_text(texts, pairs).at("logits").to(torch::kCPU).to(torch::kFloat).softmax(-1).contiguous();
    std::vector<Classification> out;
    for (int64_t i = 0; i < probs.size(0); ++i) {
      Classification c;
      int64_t best = probs[i].argmax().item<int64_t>();
      for (int64_t k = 0; k < probs.size(1); ++k) c.scores.emplace_back(label(k), probs[i][k].item<float>());
      c.label = label(best);
      c.score = probs[i][best].item<float>();
      out.push_back(std::move(c));
    }
    return out;
  }

  // The name of label k (manifest id2label; LABEL_k when it has none).
  std::string label(int64_t k) const {
    const auto& id2label = manifest_.value("id2label", nlohmann::json());
    const auto key = std::to_string(k);
    if (id2label.is_object() && id2label.contains(key)) return id2label[key].get<std::string>();
    return "LABEL_" + key;
  }

 private:
  std::unique_ptr<Tokenizer> tokenizer_;

  static nlohmann::json parse_json_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error("cannot read " + path);
    const auto text = read_bounded(f, 64u << 20, path);  // a manifest is a few KB
    check_json_depth(text, path, "re-export the model");
    try {
      return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw Error(path + " is not valid JSON (" + e.what() + "); re-export the model");
    }
  }

  static std::vector<std::string> names(const std::vector<TensorSpec>& specs) {
    std::vector<std::string> out;
    for (const auto& s : specs) out.push_back(s.name);
    return out;
  }

  // "input_ids, attention_mask, token_type_ids (token_type_ids: zeros if left out)"
  std::string takes() const {
    std::vector<std::string> defaults;
    for (const auto& s : inputs_)
      if (!s.default_value.empty()) defaults.push_back(s.name + ": " + s.default_value);
    return join(input_names()) + (defaults.empty() ? "" : " (" + join(defaults, "; ") + " if left out)");
  }

  torch::Tensor default_input(const TensorSpec& spec, const NamedTensors& given) const {
    for (const auto& other : inputs_)
      if (other.shape == spec.shape && given.count(other.name) && given.at(other.name).defined()) {
        const auto& like = given.at(other.name);
        if (spec.default_value == "zeros")
          return torch::zeros(like.sizes(), torch::TensorOptions().dtype(scalar_type(spec.dtype)).device(like.device()));
      }
    throw Error("missing input " + spec.name + "; this artifact takes " + takes());
  }

  bool has_input(const std::string& name) const {
    for (const auto& s : inputs_)
      if (s.name == name) return true;
    return false;
  }

  void read_manifest(const std::string& path) {
    try {
      const auto& version = manifest_.at("format_version");
      if (!version.is_number_integer() || version.get<int>() > kFormatVersion)
        throw Error(path + " has format_version " + version.dump() + "; this hf_torchscript.hpp reads up to " +
                    std::to_string(kFormatVersion) + ": upgrade it");
      for (const auto& which : {"inputs", "outputs"}) {
        auto& specs = std::string(which) == "inputs" ? inputs_ : outputs_;
        for (const auto& s : manifest_.at(which)) {
          TensorSpec spec{s.at("name").get<std::string>(), s.at("dtype").get<std::string>(),
                          s.at("shape").get<std::vector<nlohmann::json>>(), s.value("default", std::string())};
          if (s.contains("range")) {
            spec.has_range = true;
            spec.lo = s.at("range").at(0).get<int64_t>();
            spec.hi = s.at("range").at(1).get<int64_t>();
          }
          specs.push_back(spec);
        }
      }
      format_ = manifest_.value("format", std::string("torchscript"));
      task_ = manifest_.at("task").get<std::string>();
      max_length_ = manifest_.at("max_length").get<int64_t>();
      const auto pad = manifest_.value("pad_token_id", nlohmann::json());
      pad_token_id_ = pad.is_number_integer() ? pad.get<int64_t>() : 0;
    } catch (const nlohmann::json::exception& e) {
      throw Error(path + " lacks a field this runner needs (" + e.what() + "); re-export the model");
    }
    if (inputs_.empty()) throw Error(path + " lists no inputs; re-export the model");
  }

  // Every file listed in manifest.json "files" (format 2; format 1 hashed model.pt only) must
  // exist and have the listed sha256, so an edited tokenizer.json or model.pt is refused by name.
  void verify_files(const std::filesystem::path& dir, const std::string& manifest_file,
                    const std::string& model_name) const {
    const std::string edited = " has no valid 'files' list of hashes: it was edited; re-export the model";
    nlohmann::json files;
    if (manifest_.at("format_version").get<int>() >= 2) {
      files = manifest_.value("files", nlohmann::json());
    } else {
      files = nlohmann::json::object();
      files["model.pt"] = manifest_.value("sha256", nlohmann::json());
    }
    const auto model_sha = manifest_.value("sha256", nlohmann::json());
    if (!files.is_object() || !files.contains(model_name) || files[model_name] != model_sha)
      throw Error(manifest_file + edited);
    for (const auto& kv : files.items()) {
      const std::string& name = kv.key();
      const auto path = dir / name;
      if (!kv.value().is_string()) throw Error(manifest_file + edited);
      if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
          name.find('\\') != std::string::npos || !std::filesystem::is_regular_file(path))
        throw Error(path.string() + " is listed in manifest.json but missing; re-export the model");
      const std::string want = kv.value().get<std::string>();
      const std::string got = sha256_file(path.string());
      if (got != want)
        throw Error(path.string() + " sha256 " + got.substr(0, 16) + "... does not match manifest.json (" +
                    want.substr(0, 16) + "...): the file was modified or replaced; re-export it");
    }
  }

  void check_belongs_together(const std::string& embedded_text, const std::string& manifest_file,
                              const std::string& model_file) {
    const std::string fix = ": they come from different exports, or one was edited; re-export the model";
    // forward(self, <inputs in manifest order>)
    const auto& args = module_.get_method("forward").function().getSchema().arguments();
    std::vector<std::string> forward_names;
    for (size_t i = 1; i < args.size(); ++i) forward_names.push_back(args[i].name());
    if (forward_names != input_names())
      throw Error(model_file + " takes inputs (" + join(forward_names) + ") but " + manifest_file + " lists (" +
                  join(input_names()) + ")" + fix);
    if (embedded_text.empty()) return;  // written by a producer that did not embed it
    nlohmann::json embedded;
    try {
      check_json_depth(embedded_text, "the manifest embedded in " + model_file, "re-export the model");
      embedded = nlohmann::json::parse(embedded_text);
    } catch (const nlohmann::json::exception&) {
      throw Error("the manifest embedded in " + model_file + " is not valid JSON; re-export the model");
    }
    auto on_disk = manifest_;
    on_disk.erase("sha256");  // the embedded copy cannot hold the hash of the file it lives in
    if (on_disk.contains("files") && on_disk["files"].is_object()) on_disk["files"].erase("model.pt");
    if (embedded != on_disk) throw Error(manifest_file + " differs from the manifest embedded in " + model_file + fix);
  }

  void check_input(const TensorSpec& spec, const torch::Tensor& x) const {
    if (!x.defined()) throw Error("input " + spec.name + " is an undefined tensor");
    const auto want = scalar_type(spec.dtype);
    if (x.scalar_type() != want)
      throw Error("input " + spec.name + " must be " + spec.dtype + ", got " + dtype_name(x.scalar_type()) +
                  (want == torch::kLong ? " (token ids are integers)" : ""));
    if (x.dim() != static_cast<int64_t>(spec.shape.size()))
      throw Error("input " + spec.name + " must have rank " + std::to_string(spec.shape.size()) + " (" +
                  axes_text(spec.shape) + "), got shape " + shape_text(x.sizes()));
    for (size_t d = 0; d < spec.shape.size(); ++d)
      if (spec.shape[d].is_number_integer() && x.size(d) != spec.shape[d].get<int64_t>())
        throw Error("input " + spec.name + " must have size " + spec.shape[d].dump() + " at dim " + std::to_string(d) +
                    " (" + axes_text(spec.shape) + "), got shape " + shape_text(x.sizes()));
    if (x.numel() == 0)
      throw Error("input " + spec.name + " is empty (shape " + shape_text(x.sizes()) +
                  "); pass at least one row and one token");
  }

  // ---- AOTInductor packages (model.pt2) ------------------------------------------------------

  void load_pt2(const std::string& model_file, const std::string& manifest_file) {
    namespace fs = std::filesystem;
    if (!fs::is_regular_file(model_file))
      throw Error("'" + directory_ + "' has no model.pt2; re-export the model");
    if (device_ != torch::kCPU)
      throw Error(model_file + " was compiled for the CPU; load it with torch::kCPU");
#if HF_TORCHSCRIPT_HAS_AOTI
    std::vector<std::string> models;
    try {
      const auto& shapes = manifest_.at("shapes");
      models = manifest_.at("aoti").at("models").get<std::vector<std::string>>();
      if (shapes.contains("buckets") && shapes.at("buckets").is_array())
        lengths_ = shapes.at("buckets").get<std::vector<int64_t>>();
      else
        lengths_ = {max_length_};
      pad_to_bucket_ = shapes.at("strategy").get<std::string>() != "dynamic";
      signature_ = {{"inputs", manifest_.at("inputs")}, {"outputs", manifest_.at("outputs")},
                    {"max_length", manifest_.at("max_length")}, {"strategy", shapes.at("strategy")},
                    {"buckets", shapes.value("buckets", nlohmann::json())}, {"models", models}};
    } catch (const nlohmann::json::exception& e) {
      throw Error(manifest_file + " lacks a field this runner needs for model.pt2 (" + e.what() +
                  "); re-export the model");
    }
    if (models.size() != lengths_.size())
      throw Error(manifest_file + " lists " + std::to_string(models.size()) + " compiled models for " +
                  std::to_string(lengths_.size()) + " lengths; re-export the model");
    for (const auto& name : models) {
      try {
        loaders_.push_back(std::make_unique<torch::inductor::AOTIModelPackageLoader>(model_file, name));
      } catch (const std::exception& e) {
        std::string what = e.what();
        throw Error("AOTIModelPackageLoader could not load model '" + name + "' from " + model_file + ": " +
                    what.substr(0, what.find('\n')) + "; a .pt2 runs only with the libtorch version it was compiled "
                    "with (manifest versions.torch), on a CPU with its ISA (manifest aoti.cpu_isa): re-export it");
      }
    }
    // The manifest the package embeds (extra/manifest.json: everything but the package's own hash),
    // as model.pt embeds it; then the signature compiled into its metadata.
    std::string embedded_text;
    try {
      caffe2::serialize::PyTorchStreamReader reader(model_file);
      if (reader.hasRecord("extra/manifest.json")) {
        auto record = reader.getRecord("extra/manifest.json");
        embedded_text.assign(static_cast<const char*>(std::get<0>(record).get()), std::get<1>(record));
      }
    } catch (const std::exception& e) {
      std::string what = e.what();
      throw Error(model_file + " is not a readable model archive (" + what.substr(0, what.find('\n')) +
                  "); re-export the model");
    }
    if (!embedded_text.empty()) {
      nlohmann::json embedded;
      try {
        check_json_depth(embedded_text, "the manifest embedded in " + model_file, "re-export the model");
        embedded = nlohmann::json::parse(embedded_text);
      } catch (const nlohmann::json::exception&) {
        throw Error("the manifest embedded in " + model_file + " is not valid JSON; re-export the model");
      }
      auto on_disk = manifest_;
      on_disk.erase("sha256");
      if (on_disk.contains("files") && on_disk["files"].is_object()) on_disk["files"].erase("model.pt2");
      if (embedded != on_disk)
        throw Error(manifest_file + " differs from the manifest embedded in " + model_file +
                    ": they come from different exports, or one was edited; re-export the model");
    }
    const auto metadata = loaders_.front()->get_metadata();
    auto it = metadata.find("hf_torchscript.signature");
    if (it != metadata.end()) {
      nlohmann::json embedded;
      try {
        embedded = nlohmann::json::parse(it->second);
      } catch (const nlohmann::json::exception&) {
        throw Error("the signature embedded in " + model_file + " is not valid JSON; re-export the model");
      }
      if (embedded != signature_)
        throw Error(model_file + " was compiled for a different signature than " + manifest_file +
                    " describes: they come from different exports, or one was edited; re-export the model");
    }
#else
    (void)manifest_file;
    throw Error(model_file + " is an AOTInductor package, and the libtorch this program was built with has no "
                "torch/csrc/inductor/aoti_package/model_package_loader.h: rebuild against torch >= 2.6");
#endif
  }

  // The checks a TorchScript artifact makes inside model.pt, made here for model.pt2: one batch
  // size, one length per sequence axis, lengths 1..max_length, values inside each input's range.
  void check_pt2_inputs(const std::vector<torch::Tensor>& inputs) const {
    std::map<std::string, std::pair<int64_t, std::string>> sizes;  // axis -> (size, input that set it)
    for (size_t i = 0; i < inputs.size(); ++i) {
      const auto& spec = inputs_[i];
      for (size_t d = 0; d < spec.shape.size(); ++d) {
        if (!spec.shape[d].is_string()) continue;
        const auto axis = spec.shape[d].get<std::string>();
        const auto n = inputs[i].size(static_cast<int64_t>(d));
        auto found = sizes.find(axis);
        if (found == sizes.end()) {
          sizes[axis] = {n, spec.name};
        } else if (found->second.first != n) {
          const std::string what = axis == "batch_size" ? "batch"
                                   : axis.size() >= 15 && axis.compare(axis.size() - 15, 15, "sequence_length") == 0
                                       ? "length"
                                       : axis;
          throw Error("input " + spec.name + " has " + what + " " + std::to_string(n) + " but " + found->second.second +
                      " has " + std::to_string(found->second.first) + "; pass inputs of one shape");
        }
      }
    }
    for (const auto* axis : {"sequence_length", "decoder_sequence_length"}) {
      auto found = sizes.find(axis);
      if (found != sizes.end() && found->second.first > max_length_)
        throw Error("input length " + std::to_string(found->second.first) + " exceeds the maximum " +
                    std::to_string(max_length_) + " this artifact accepts; truncate the input");
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      const auto& spec = inputs_[i];
      if (!spec.has_range) continue;
      const auto lo = inputs[i].min().item<int64_t>(), hi = inputs[i].max().item<int64_t>();
      if (lo < spec.lo || hi >= spec.hi)
        throw Error("input " + spec.name + " holds values from " + std::to_string(lo) + " to " + std::to_string(hi) +
                    " but must be " + range_text(spec));
    }
  }

  std::vector<torch::Tensor> run_pt2(const std::vector<torch::Tensor>& inputs) {
    check_pt2_inputs(inputs);
#if HF_TORCHSCRIPT_HAS_AOTI
    // Inputs on the sequence axis (last axis "sequence_length") are padded to the bucket.
    int64_t length = -1;
    for (size_t i = 0; i < inputs.size(); ++i)
      if (!inputs_[i].shape.empty() && inputs_[i].shape.back() == "sequence_length") {
        length = inputs[i].size(-1);
        break;
      }
    size_t which = 0;
    if (length >= 0)
      while (which + 1 < lengths_.size() && length > lengths_[which]) ++which;
    const int64_t pad = (length >= 0 && pad_to_bucket_) ? lengths_[which] - length : 0;
    std::vector<torch::Tensor> args;
    for (size_t i = 0; i < inputs.size(); ++i) {
      auto x = inputs[i].contiguous();  // compiled kernels index raw memory in the layout they were built for
      if (pad > 0 && !inputs_[i].shape.empty() && inputs_[i].shape.back() == "sequence_length") {
        auto shape = x.sizes().vec();
        shape.back() = pad;
        x = torch::cat({x, torch::full(shape, pad_value(i), x.options())}, -1);
      }
      args.push_back(x);
    }
    std::vector<torch::Tensor> out;
    {
      c10::InferenceMode guard;
      try {
        out = loaders_[which]->run(args);
      } catch (const std::exception& e) {
        // The graph's own range guard says "hf-torchscript: ..." (the checks above normally come first).
        const std::string what = e.what(), marker = "hf-torchscript: ";
        const auto pos = what.rfind(marker);
        throw Error(pos == std::string::npos ? script_error_message(what)
                                             : what.substr(pos + marker.size(), what.find('\n', pos) - pos - marker.size()));
      }
    }
    if (out.size() != outputs_.size())
      throw Error("model.pt2 returned " + std::to_string(out.size()) + " outputs but manifest.json lists " +
                  std::to_string(outputs_.size()) + " (" + join(output_names()) + "); re-export the model");
    if (pad > 0)
      for (size_t o = 0; o < out.size(); ++o)
        for (size_t d = 0; d < outputs_[o].shape.size(); ++d)
          if (outputs_[o].shape[d] == "sequence_length") out[o] = out[o].narrow(static_cast<int64_t>(d), 0, length);
    return out;
#else
    (void)inputs;
    throw Error("this program was built without AOTInductor support");
#endif
  }

  // The same words as the TorchScript dispatcher and the Python runtime (inputs.range_text).
  static std::string range_text(const TensorSpec& spec) {
    const auto lo = std::to_string(spec.lo), hi = std::to_string(spec.hi);
    if (spec.name == "attention_mask" || spec.name == "decoder_attention_mask") return "0 or 1";
    if (spec.name == "token_type_ids") return "in [" + lo + ", " + hi + ") (the model has " + hi + " token types)";
    return "token ids in [" + lo + ", " + hi + ") (the vocabulary has " + hi +
           " entries); use the tokenizer shipped with the artifact";
  }

  int64_t pad_value(size_t input) const {
    const auto& spec = manifest_.at("inputs").at(input);
    return spec.value("pad_value", static_cast<int64_t>(0));
  }

  std::string directory_;
  torch::Device device_;
  std::string format_ = "torchscript";
  nlohmann::json signature_;
  std::vector<int64_t> lengths_;
  bool pad_to_bucket_ = false;
#if HF_TORCHSCRIPT_HAS_AOTI
  std::vector<std::unique_ptr<torch::inductor::AOTIModelPackageLoader>> loaders_;
#endif
  nlohmann::json manifest_;
  std::vector<TensorSpec> inputs_, outputs_;
  std::string task_;
  int64_t max_length_ = 0;
  int64_t pad_token_id_ = 0;
  torch::jit::Module module_;
};

// A text-generation artifact's decode loop (Python: hf_torchscript.generation). The model file holds
// a static KV cache; forward(input_ids[1, S], cache_position[S]) -> logits[1, S, vocab]: the prompt in
// one call (prefill), then one token per call. One sequence at a time per Model: the cache is model
// state, so use one Generator (and Model) per thread. Positions restart at 0 for each generation;
// the graph masks every cache slot past the query's position, so no reset is needed.
struct SamplingConfig {
  int64_t max_new_tokens = 32;
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 0;    // 0: off
  double top_p = 1.0;   // 1: off
  uint64_t seed = 0;
};

class Generator {
 public:
  explicit Generator(Model& model) : model_(model) {
    const auto& m = model.manifest();
    if (model.task() != "text-generation" || !m.contains("generation"))
      throw Error("this artifact was exported for '" + model.task() + "', not text-generation; re-export it with "
                  "--task text-generation");
    const auto& g = m.at("generation");
    max_cache_len_ = g.at("max_cache_len").get<int64_t>();
    vocab_size_ = g.at("vocab_size").get<int64_t>();
    for (const auto& e : g.value("eos_token_ids", nlohmann::json::array())) eos_.push_back(e.get<int64_t>());
  }

  int64_t max_cache_len() const { return max_cache_len_; }
  const std::vector<int64_t>& eos_token_ids() const { return eos_; }

  // New token ids after `prompt` (EOS included when generated). `on_token` (optional) is called with
  // each token as it is chosen; returning false stops the generation.
  std::vector<int64_t> generate(const std::vector<int64_t>& prompt, const SamplingConfig& cfg,
                                const std::function<bool(int64_t)>& on_token = nullptr) {
    if (prompt.empty()) throw Error("the prompt is empty; pass at least one token");
    if (static_cast<int64_t>(prompt.size()) > max_cache_len_)
      throw Error("the prompt has " + std::to_string(prompt.size()) + " tokens but this artifact's KV cache holds " +
                  std::to_string(max_cache_len_) + "; shorten it, or re-export with a larger --max-cache-len");
    if (cfg.max_new_tokens < 1) throw Error("max_new_tokens must be >= 1");
    if (cfg.do_sample && !(cfg.temperature > 0)) throw Error("temperature must be > 0");
    // The same generator as Python's torch.Generator().manual_seed(seed): the same seed draws the same tokens.
    auto gen = at::make_generator<at::CPUGeneratorImpl>(cfg.seed);
    const auto t0 = std::chrono::steady_clock::now();
    auto ids = torch::tensor(prompt, torch::kLong).unsqueeze(0);
    auto logits = model_.run_positional({ids, torch::arange(static_cast<int64_t>(prompt.size()), torch::kLong)})[0];
    auto last = logits[0][-1].to(torch::kFloat);
    const auto t1 = std::chrono::steady_clock::now();
    last_ = Stats{};
    last_.prefill_s = std::chrono::duration<double>(t1 - t0).count();
    last_.prompt_tokens = static_cast<int64_t>(prompt.size());
    std::vector<int64_t> out;
    int64_t pos = static_cast<int64_t>(prompt.size());
    // The same order of stop rules as the Python runtime (eos, then length, then a full cache).
    while (true) {
      const int64_t token = choose(last, cfg, gen);
      out.push_back(token);
      last_.tokens = static_cast<int64_t>(out.size());
      last_.decode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
      if (on_token && !on_token(token)) {
        last_.finish_reason = "stopped";
        break;
      }
      if (std::find(eos_.begin(), eos_.end(), token) != eos_.end()) {
        last_.finish_reason = "eos";
        break;
      }
      if (static_cast<int64_t>(out.size()) >= cfg.max_new_tokens) break;
      if (pos >= max_cache_len_) {
        last_.finish_reason = "cache";
        break;
      }
      logits = model_.run_positional({torch::tensor({token}, torch::kLong).unsqueeze(0),
                                      torch::tensor({pos}, torch::kLong)})[0];
      last = logits[0][-1].to(torch::kFloat);
      ++pos;
    }
    return out;
  }

  // What the last generate() did: why it stopped ("eos", "length", "cache", or "stopped" when the
  // callback said so), and its timings (prefill = the prompt's forward pass; decode = the rest).
  struct Stats {
    std::string finish_reason = "length";
    int64_t prompt_tokens = 0, tokens = 0;
    double prefill_s = 0, decode_s = 0;
  };
  const Stats& last_stats() const { return last_; }

  // Text in, text out through the artifact's tokenizer, as the Python runtime's generate/stream:
  // the prompt is encoded with its special tokens (BOS where the tokenizer adds one), the output
  // decoded without them. `on_text` receives each piece as it is complete: a token that ends inside
  // a UTF-8 character waits for the next; text that could still begin a `stop` string is held back,
  // and a stop string ends the generation (finish_reason "stop") without being part of the text.
  struct TextGeneration {
    std::string text, finish_reason;
    std::vector<int64_t> prompt_ids, token_ids;
    Stats stats;
    double first_token_s = 0, total_s = 0;
  };
  TextGeneration generate_text(const std::string& prompt, const SamplingConfig& cfg,
                               const std::vector<std::string>& stop = {},
                               const std::function<void(const std::string&)>& on_text = nullptr) {
    Tokenizer& tok = model_.tokenizer();
    TextGeneration r;
    try {
      r.prompt_ids = tok.encode(prompt).ids;
    } catch (const TokenizerError& e) {
      throw Error(std::string("the prompt: ") + e.what());
    }
    for (const auto& s : stop)
      if (s.empty()) throw Error("a stop string is empty; pass text to stop at");
    const auto t0 = std::chrono::steady_clock::now();
    std::string sent;  // text already handed to on_text
    bool stopped = false;
    auto emit = [&](const std::string& upto) {
      if (upto.size() > sent.size() && upto.compare(0, sent.size(), sent) == 0) {
        if (on_text) on_text(upto.substr(sent.size()));
        sent = upto;
      }
    };
    r.token_ids = generate(r.prompt_ids, cfg, [&](int64_t token) {
      if (r.token_ids.empty()) r.first_token_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      r.token_ids.push_back(token);
      std::string text = tok.decode(r.token_ids);
      static const std::string kReplacement = "\xEF\xBF\xBD";  // an incomplete UTF-8 sequence so far
      if (text.size() >= 3 && text.compare(text.size() - 3, 3, kReplacement) == 0) return true;
      if (stop.empty()) {
        emit(text);
        return true;
      }
      size_t cut = std::string::npos;
      for (const auto& s : stop) cut = std::min(cut, text.find(s));
      if (cut != std::string::npos) {
        emit(text.substr(0, cut));
        sent = text.substr(0, cut);
        stopped = true;
        return false;
      }
      size_t held = 0;  // trailing bytes that could begin a stop string
      for (const auto& s : stop)
        for (size_t k = std::min(s.size() - 1, text.size()); k > held; --k)
          if (text.compare(text.size() - k, k, s, 0, k) == 0) {
            held = k;
            break;
          }
      emit(text.substr(0, text.size() - held));
      return true;
    });
    r.stats = last_;
    if (stopped) {
      r.finish_reason = "stop";
    } else {
      emit(tok.decode(r.token_ids));
      sent = tok.decode(r.token_ids);
      r.finish_reason = last_.finish_reason;
    }
    r.text = sent;
    r.total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }

  // Temperature, then top-k, then top-p, as transformers' warpers (and hf_torchscript.generation.warp_logits).
  static torch::Tensor warp(torch::Tensor logits, const SamplingConfig& cfg) {
    logits = logits.to(torch::kFloat);
    if (cfg.temperature != 1.0) logits = logits / cfg.temperature;
    if (cfg.top_k > 0 && cfg.top_k < logits.size(-1)) {
      auto kth = std::get<0>(torch::topk(logits, cfg.top_k))[-1];
      logits = logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
    }
    if (cfg.top_p < 1.0) {
      auto sorted = torch::sort(logits, /*dim=*/-1, /*descending=*/false);
      auto cum = std::get<0>(sorted).softmax(-1).cumsum(-1);
      auto remove = cum <= (1 - cfg.top_p);
      remove.index_put_({-1}, false);
      logits = logits.masked_fill(remove.scatter(0, std::get<1>(sorted), remove),
                                  -std::numeric_limits<float>::infinity());
    }
    return logits;
  }

 private:
  int64_t choose(const torch::Tensor& logits, const SamplingConfig& cfg, at::Generator& gen) {
    if (!cfg.do_sample) return logits.argmax().item<int64_t>();
    auto probs = warp(logits, cfg).softmax(-1);
    return torch::multinomial(probs, 1, false, gen).item<int64_t>();
  }

  Model& model_;
  int64_t max_cache_len_ = 0, vocab_size_ = 0;
  std::vector<int64_t> eos_;
  Stats last_;
};

}  // namespace hf_torchscript
