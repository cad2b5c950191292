// hts_run: run an hf-torchscript artifact on token ids from JSON and print its outputs as JSON.
//
//   hts_run OUTPUT_DIR [INPUT_JSON|-] [--outputs NAME,...] [--threads T] [--max-input-bytes B]
//   hts_run OUTPUT_DIR [INPUT_JSON|-] --bench N [--warmup W] [--threads T]
//   hts_run OUTPUT_DIR --generate --ids 1,2,3 [--max-new-tokens N] [--do-sample] [--temperature T]
//           [--top-k K] [--top-p P] [--seed S]     (text-generation artifacts: token ids in, token ids out)
//   hts_run OUTPUT_DIR --generate (--text PROMPT ... | --input FILE) [--stop S ...] [--stream] [...]
//           (text in, text out through the artifact's tokenizer: the run/1 document of
//           `hf-torchscript run --json`, or with --stream the text as it is generated, one line per prompt)
//
// Input (a file, or stdin when INPUT_JSON is "-" or absent): one nested list per manifest input,
//   {"input_ids": [[101, 7592, 102]], "attention_mask": [[1, 1, 1]], "token_type_ids": [[0, 0, 0]]}
// rows padded to one length with the input's pad_value (manifest.json) and attention_mask 0.
// Output: {"outputs": {"<name>": {"dtype": "float32", "shape": [1, 384], "data": [[...]]}, ...}}
// in manifest order; floats are printed with the shortest text that reads back to the same float32.
// --bench: {"bench": {"calls": N, "warmup": W, "median_ms": ..., "p90_ms": ..., ...}} instead.
//
//   hts_run OUTPUT_DIR --text "..." [--text "..." ...] [--pair "..." ...] [--batch-size N]
//   hts_run OUTPUT_DIR --input FILE [--input-format auto|text|jsonl] [--batch-size N]
//
// Text in: tokenized with the artifact's tokenizer.json (hts_tokenizer.hpp), printed as the JSON
// document of `hf-torchscript run --json` (schema hf-torchscript/run/1): sentence-embedding
// {"embedding", "dimension", "norm"}, text-classification {"label", "score", "scores"},
// feature-extraction {"tokens", "outputs"}. --input: one text per line, or JSONL (a JSON string or
// {"text": ..., "pair": ...} per line; the default for *.jsonl / *.ndjson).
// Non-finite outputs: counted in the document's "nonfinite_outputs" (written as null), warned about on
// stderr, and the exit status is 3, as `hf-torchscript run`.
// Errors: "error: <one line>" on stderr, exit 1 (2 for a bad command line). Input is untrusted:
// more than --max-input-bytes (default 256 MiB) or nesting deeper than 64 levels is refused
// before parsing, and no malformed input crashes the runner.

#include "hf_torchscript.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <numeric>

namespace hts = hf_torchscript;

// Ordered (manifest order) and float32 (shortest round-trip text for float32 values).
using OutJson = nlohmann::basic_json<nlohmann::ordered_map, std::vector, std::string, bool, std::int64_t,
                                     std::uint64_t, float>;

namespace {

const char* kUsage =
    "usage: hts_run OUTPUT_DIR [INPUT_JSON|-] [--outputs NAME,...] [--bench N] [--warmup W] [--threads T] "
    "[--max-input-bytes B]\n"
    "       hts_run OUTPUT_DIR (--text TEXT [--pair PAIR] ... | --input FILE [--input-format auto|text|jsonl]) "
    "[--batch-size N] [--threads T]\n"
    "       hts_run OUTPUT_DIR --generate (--ids 1,2,3 | --text PROMPT ... | --input FILE) [--max-new-tokens N] "
    "[--do-sample] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop TEXT ...] [--stream]";

struct Args {
  std::string directory;
  std::string input = "-";
  std::vector<std::string> outputs;
  int bench = 0;
  int warmup = -1;
  int threads = 0;
  size_t max_input_bytes = size_t(256) << 20;
  std::vector<std::string> texts, pairs;
  std::string text_input;  // --input FILE
  std::string input_format = "auto";
  int batch_size = 32;
  bool text_mode() const { return !texts.empty() || !text_input.empty(); }
  bool generate = false;
  std::vector<int64_t> ids;
  hts::SamplingConfig sampling;
  std::vector<std::string> stop;
  bool stream = false;
};

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

int non_negative_int(const std::string& flag, const std::string& text) {
  try {
    size_t used = 0;
    int v = std::stoi(text, &used);
    if (used == text.size() && v >= 0) return v;
  } catch (const std::exception&) {
  }
  throw UsageError(flag + " takes a non-negative integer, got '" + text + "'");
}

Args parse_args(int argc, char** argv) {
  Args a;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const std::string& flag) -> std::string {
      if (i + 1 >= argc) throw UsageError(flag + " needs a value");
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage << "\n";
      std::exit(0);
    } else if (arg == "--bench") {
      a.bench = non_negative_int(arg, value(arg));
      if (a.bench == 0) throw UsageError("--bench takes the number of timed calls, at least 1");
    } else if (arg == "--generate") {
      a.generate = true;
    } else if (arg == "--ids") {
      std::stringstream ss(value(arg));
      std::string item;
      while (std::getline(ss, item, ','))
        if (!item.empty()) a.ids.push_back(non_negative_int("--ids", item));
    } else if (arg == "--max-new-tokens") {
      a.sampling.max_new_tokens = non_negative_int(arg, value(arg));
    } else if (arg == "--stop") {
      a.stop.push_back(value(arg));
      if (a.stop.back().empty()) throw UsageError("--stop takes a non-empty text");
    } else if (arg == "--stream") {
      a.stream = true;
    } else if (arg == "--do-sample") {
      a.sampling.do_sample = true;
    } else if (arg == "--temperature") {
      a.sampling.temperature = std::stod(value(arg));
    } else if (arg == "--top-k") {
      a.sampling.top_k = non_negative_int(arg, value(arg));
    } else if (arg == "--top-p") {
      a.sampling.top_p = std::stod(value(arg));
    } else if (arg == "--seed") {
      a.sampling.seed = static_cast<uint64_t>(non_negative_int(arg, value(arg)));
    } else if (arg == "--warmup") {
      a.warmup = non_negative_int(arg, value(arg));
    } else if (arg == "--threads") {
      a.threads = non_negative_int(arg, value(arg));
      if (a.threads > 1024) throw UsageError("--threads takes at most 1024, got " + std::to_string(a.threads));
    } else if (arg == "--max-input-bytes") {
      a.max_input_bytes = static_cast<size_t>(non_negative_int(arg, value(arg)));
    } else if (arg == "--text") {
      a.texts.push_back(value(arg));
    } else if (arg == "--pair") {
      a.pairs.push_back(value(arg));
    } else if (arg == "--input") {
      a.text_input = value(arg);
    } else if (arg == "--input-format") {
      a.input_format = value(arg);
      if (a.input_format != "auto" && a.input_format != "text" && a.input_format != "jsonl")
        throw UsageError("--input-format takes auto, text or jsonl, got '" + a.input_format + "'");
    } else if (arg == "--batch-size") {
      a.batch_size = non_negative_int(arg, value(arg));
      if (a.batch_size == 0) throw UsageError("--batch-size takes a positive integer");
    } else if (arg == "--outputs") {
      std::stringstream ss(value(arg));
      for (std::string name; std::getline(ss, name, ',');)
        if (!name.empty()) a.outputs.push_back(name);
    } else if (arg.size() > 1 && arg[0] == '-') {
      throw UsageError("unknown option " + arg);
    } else {
      positional.push_back(arg);
    }
  }
  if (a.text_mode()) {
    if (!a.texts.empty() && !a.text_input.empty()) throw UsageError("give --text or --input FILE, not both");
    if (!a.pairs.empty() && a.pairs.size() != a.texts.size())
      throw UsageError("--pair was given " + std::to_string(a.pairs.size()) + " times for " +
                       std::to_string(a.texts.size()) + " texts; give one --pair per --text");
    if (positional.size() != 1) throw UsageError("with --text/--input, give only OUTPUT_DIR");
  }
  if (a.generate && a.text_mode() && !a.ids.empty()) throw UsageError("--generate takes --ids or a text prompt, not both");
  if (a.generate && !a.pairs.empty()) throw UsageError("--generate takes prompts (--text), not --pair");
  if (!a.generate && (!a.stop.empty() || a.stream))
    throw UsageError(std::string(a.stream ? "--stream" : "--stop") + " applies to --generate");
  if (a.stream && !a.text_mode()) throw UsageError("--stream prints text: give the prompt with --text or --input");
  if (positional.empty() || positional.size() > 2) throw UsageError("expected OUTPUT_DIR and an optional INPUT_JSON");
  a.directory = positional[0];
  if (positional.size() == 2) a.input = positional[1];
  return a;
}

nlohmann::json read_input(const std::string& path, size_t max_bytes) {
  const std::string what = "input " + (path == "-" ? std::string("on stdin") : "'" + path + "'");
  std::string text;
  if (path == "-") {
    text = hts::read_bounded(std::cin, max_bytes, what);
  } else {
    if (!std::filesystem::is_regular_file(path)) throw hts::Error("input file '" + path + "' does not exist");
    std::ifstream f(path, std::ios::binary);
    if (!f) throw hts::Error("cannot read input file '" + path + "'");
    text = hts::read_bounded(f, max_bytes, what);
  }
  // Bounded before parsing: the checks below recurse once per level.
  hts::check_json_depth(text, what, "pass one nested list per input, e.g. {\"input_ids\": [[101, 102]]}");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw hts::Error(what + " is not valid JSON (" + e.what() + ")");
  }
}

// The shape of a nested list (from its first elements), then a check that it is rectangular
// and that every leaf is a number; all_int says whether every leaf is an integer.
std::vector<int64_t> shape_of(const nlohmann::json& value) {
  std::vector<int64_t> shape;
  for (const auto* v = &value; v->is_array(); v = &(*v)[0]) {
    shape.push_back(static_cast<int64_t>(v->size()));
    if (v->empty()) break;
  }
  return shape;
}

void check_nested(const nlohmann::json& v, size_t depth, const std::vector<int64_t>& shape, bool& all_int,
                  const std::string& where) {
  const std::string fix = "; pad rows to one length with the pad_value in manifest.json and attention_mask 0";
  if (depth < shape.size()) {
    if (!v.is_array())
      throw hts::Error("input " + where + " is " + v.dump() + " where a list of " + std::to_string(shape[depth]) +
                       " was expected" + fix);
    if (static_cast<int64_t>(v.size()) != shape[depth])
      throw hts::Error("input " + where + " has " + std::to_string(v.size()) + " values where other rows have " +
                       std::to_string(shape[depth]) + fix);
    for (size_t i = 0; i < v.size(); ++i)
      check_nested(v[i], depth + 1, shape, all_int, where + "[" + std::to_string(i) + "]");
    return;
  }
  if (v.is_array()) throw hts::Error("input " + where + " is a list where a number was expected" + fix);
  if (!v.is_number()) throw hts::Error("input " + where + " is " + v.dump() + ", not a number");
  all_int = all_int && v.is_number_integer();
}

void flatten(const nlohmann::json& v, std::vector<double>& out) {
  if (v.is_array())
    for (const auto& x : v) flatten(x, out);
  else
    out.push_back(v.get<double>());
}

void flatten_int(const nlohmann::json& v, std::vector<int64_t>& out) {
  if (v.is_array())
    for (const auto& x : v) flatten_int(x, out);
  else
    out.push_back(v.get<int64_t>());
}

// JSON nested lists -> tensors. Integers become int64; a value with a fraction makes the
// tensor float32 (so the model's dtype check reports it); float inputs accept integers.
hts::NamedTensors to_tensors(const nlohmann::json& input, const hts::Model& model) {
  if (!input.is_object())
    throw hts::Error("input JSON must be an object of nested lists, e.g. {\"input_ids\": [[101, 102]], ...}");
  hts::NamedTensors tensors;
  for (const auto& [name, value] : input.items()) {
    const auto shape = shape_of(value);
    bool all_int = true;
    check_nested(value, 0, shape, all_int, name);
    bool want_float = false;
    for (const auto& spec : model.inputs())
      if (spec.name == name) want_float = hts::scalar_type(spec.dtype) != torch::kLong;
    if (all_int && !want_float) {
      std::vector<int64_t> flat;
      flatten_int(value, flat);
      tensors[name] = torch::tensor(flat, torch::kLong).reshape(shape);
    } else {
      std::vector<double> flat;
      flatten(value, flat);
      tensors[name] = torch::tensor(flat, torch::kDouble).to(torch::kFloat).reshape(shape);
    }
  }
  return tensors;
}

OutJson nested(const float* data, const std::vector<int64_t>& shape, size_t dim, size_t& offset) {
  OutJson arr = OutJson::array();
  if (dim == shape.size()) return OutJson(data[offset++]);
  for (int64_t i = 0; i < shape[dim]; ++i) arr.push_back(nested(data, shape, dim + 1, offset));
  return arr;
}

OutJson nested_int(const int64_t* data, const std::vector<int64_t>& shape, size_t dim, size_t& offset) {
  OutJson arr = OutJson::array();
  if (dim == shape.size()) return OutJson(data[offset++]);
  for (int64_t i = 0; i < shape[dim]; ++i) arr.push_back(nested_int(data, shape, dim + 1, offset));
  return arr;
}

OutJson describe(const torch::Tensor& t) {
  OutJson o;
  o["dtype"] = hts::dtype_name(t.scalar_type());
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
  o["shape"] = shape;
  size_t offset = 0;
  auto cpu = t.to(torch::kCPU);
  if (cpu.is_floating_point()) {
    auto f = cpu.to(torch::kFloat).contiguous();
    o["data"] = nested(f.data_ptr<float>(), shape, 0, offset);
  } else {
    auto i = cpu.to(torch::kLong).contiguous();
    o["data"] = nested_int(i.data_ptr<int64_t>(), shape, 0, offset);
  }
  return o;
}

int print_outputs(hts::Model& model, const hts::NamedTensors& inputs, const std::vector<std::string>& wanted) {
  auto outputs = model.run(inputs);
  auto names = model.output_names();
  for (const auto& w : wanted)
    if (std::find(names.begin(), names.end(), w) == names.end())
      throw hts::Error("--outputs names " + w + ", which this artifact does not produce; it produces " +
                       hts::join(names));
  OutJson result;
  result["outputs"] = OutJson::object();
  for (const auto& name : names)
    if (wanted.empty() || std::find(wanted.begin(), wanted.end(), name) != wanted.end())
      result["outputs"][name] = describe(outputs.at(name));
  std::cout << result.dump() << "\n";
  return 0;
}

double percentile(std::vector<double> sorted, double q) {
  // Nearest-rank: the smallest value with at least q of the calls at or below it.
  auto rank = static_cast<size_t>(std::ceil(q * sorted.size()));
  return sorted[std::max<size_t>(rank, 1) - 1];
}

int bench(hts::Model& model, const hts::NamedTensors& inputs, int calls, int warmup) {
  if (warmup < 0) warmup = std::max(3, calls / 10);
  // The first calls run TorchScript's profiling executor and allocator warm-up: not measured.
  for (int i = 0; i < warmup; ++i) model.run(inputs);
  std::vector<double> ms;
  for (int i = 0; i < calls; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    model.run(inputs);
    auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  double median = ms.size() % 2 ? ms[ms.size() / 2] : (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]) / 2;
  const auto& first = inputs.at(model.inputs().front().name);
  nlohmann::ordered_json b;
  b["calls"] = calls;
  b["warmup"] = warmup;
  b["threads"] = at::get_num_threads();
  b["batch_size"] = first.dim() > 0 ? first.size(0) : 1;
  b["sequence_length"] = first.dim() > 1 ? first.size(-1) : 1;
  b["median_ms"] = median;
  b["p90_ms"] = percentile(ms, 0.9);
  b["mean_ms"] = std::accumulate(ms.begin(), ms.end(), 0.0) / ms.size();
  b["min_ms"] = ms.front();
  b["max_ms"] = ms.back();
  nlohmann::ordered_json out;
  out["bench"] = b;
  std::cout << out.dump() << "\n";
  return 0;
}

// ---- text mode: the `hf-torchscript run --json` document ----

struct TextItem {
  std::string text, pair;
  bool has_pair = false;
};

std::vector<TextItem> read_text_items(const Args& a) {
  std::vector<TextItem> items;
  if (a.text_input.empty()) {
    for (size_t i = 0; i < a.texts.size(); ++i)
      items.push_back({a.texts[i], a.pairs.empty() ? "" : a.pairs[i], !a.pairs.empty()});
    return items;
  }
  std::string content;
  if (a.text_input == "-") {
    content = hts::read_bounded(std::cin, a.max_input_bytes, "--input on stdin");
  } else {
    std::ifstream f(a.text_input, std::ios::binary);
    if (!f) throw hts::Error("cannot read --input '" + a.text_input + "'; pass a text file, one text per line");
    content = hts::read_bounded(f, a.max_input_bytes, "--input '" + a.text_input + "'");
  }
  std::string fmt = a.input_format;
  if (fmt == "auto") {
    auto ends = [&](const std::string& suffix) {
      return a.text_input.size() >= suffix.size() &&
             a.text_input.compare(a.text_input.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    fmt = ends(".jsonl") || ends(".ndjson") ? "jsonl" : "text";
  }
  std::stringstream ss(content);
  size_t n = 0;
  for (std::string line; std::getline(ss, line);) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t\f\v") == std::string::npos) continue;  // blank lines separate
    if (fmt == "text") {
      items.push_back({line, "", false});
      continue;
    }
    nlohmann::json x;
    try {
      x = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      throw hts::Error("--input '" + a.text_input + "' line " + std::to_string(n) +
                       " is not JSON; give one JSON string or {\"text\": ...} object per line, or --input-format text");
    }
    if (x.is_string()) {
      items.push_back({x.get<std::string>(), "", false});
    } else if (x.is_object() && x.contains("text") && x["text"].is_string()) {
      bool pair = x.contains("pair") && x["pair"].is_string();
      items.push_back({x["text"].get<std::string>(), pair ? x["pair"].get<std::string>() : "", pair});
    } else {
      throw hts::Error("--input '" + a.text_input + "' line " + std::to_string(n) +
                       " is neither a JSON string nor an object with a \"text\" string");
    }
  }
  if (items.empty()) throw hts::Error("no input texts in --input '" + a.text_input + "'");
  return items;
}

// The model's non-finite values in one call, warned about in the Python runtime's words (NonFiniteOutputWarning).
int64_t count_nonfinite(const hts::NamedTensors& out, OutJson& warnings, const std::string& directory) {
  int64_t total = 0;
  std::string where;
  for (const auto& [name, t] : out) {
    if (!t.is_floating_point()) continue;
    const int64_t bad = (~torch::isfinite(t)).sum().item<int64_t>();
    if (!bad) continue;
    total += bad;
    where += (where.empty() ? "" : ", ") + name + ": " + std::to_string(bad);
  }
  if (total)
    warnings.push_back(directory + " returned " + std::to_string(total) + " NaN/infinite values (" + where +
                       "): the answers for those inputs mean nothing; the model or its weights are broken for them "
                       "(re-export: export refuses non-finite weights)");
  return total;
}

// Floats in the document that JSON cannot hold (written as null).
int64_t count_nulls(const OutJson& j) {
  if (j.is_number_float()) return std::isfinite(j.get<float>()) ? 0 : 1;
  int64_t n = 0;
  if (j.is_structured())
    for (const auto& v : j) n += count_nulls(v);
  return n;
}

// `hf-torchscript run`'s exit status when the artifact returned NaN/inf values (the output is still written).
constexpr int kExitNonFinite = 3;

OutJson floats_of(const torch::Tensor& t) {
  auto f = t.to(torch::kCPU).to(torch::kFloat).contiguous();
  std::vector<int64_t> shape(f.sizes().begin(), f.sizes().end());
  size_t offset = 0;
  return nested(f.data_ptr<float>(), shape, 0, offset);
}

int run_texts(hts::Model& model, const Args& a) {
  const auto items = read_text_items(a);
  const std::string& task = model.task();
  if (task != "sentence-embedding" && task != "text-classification" && task != "feature-extraction")
    throw hts::Error("task " + task + " does not take text in C++ yet (sentence-embedding, text-classification and "
                     "feature-extraction do); pass token ids as JSON");
  OutJson results = OutJson::array();
  OutJson warnings = OutJson::array();
  int64_t nonfinite = 0;
  for (size_t start = 0; start < items.size(); start += size_t(a.batch_size)) {
    size_t end = std::min(items.size(), start + size_t(a.batch_size));
    std::vector<std::string> texts, pairs;
    bool any_pair = false, all_pair = true;
    for (size_t i = start; i < end; ++i) any_pair |= items[i].has_pair, all_pair &= items[i].has_pair;
    if (any_pair && !all_pair)
      throw hts::Error("pass either texts or (text, pair) inputs, not a mix");
    for (size_t i = start; i < end; ++i) {
      texts.push_back(items[i].text);
      if (any_pair) pairs.push_back(items[i].pair);
    }
    auto batch = model.encode(texts, pairs);
    if (batch.truncated)  // the Python runtime's TruncationWarning (one per batch), word for word
      warnings.push_back(std::to_string(batch.truncated) + " input(s) have up to " + std::to_string(batch.longest) +
                         " tokens, more than this artifact's max length " + std::to_string(model.max_length()) +
                         "; they were truncated");
    auto out = model.run(batch.inputs);
    nonfinite += count_nonfinite(out, warnings, a.directory);
    for (size_t i = 0; i < texts.size(); ++i) {
      const auto row = int64_t(i);
      OutJson input;
      input["text"] = texts[i];
      if (any_pair) input["pair"] = pairs[i];
      OutJson o;
      if (task == "sentence-embedding") {
        auto e = out.at("sentence_embedding")[row].to(torch::kFloat);
        o["embedding"] = floats_of(e);
        o["dimension"] = e.size(-1);
        o["norm"] = e.norm().item<float>();
      } else if (task == "text-classification") {
        auto probs = out.at("logits")[row].to(torch::kCPU).to(torch::kFloat).softmax(-1);
        int64_t best = probs.argmax().item<int64_t>();
        o["label"] = model.label(best);
        o["score"] = probs[best].item<float>();
        o["scores"] = OutJson::object();
        for (int64_t k = 0; k < probs.size(0); ++k) o["scores"][model.label(k)] = probs[k].item<float>();
      } else {  // feature-extraction: every output, the sequence axis cut to this row's tokens
        const auto& enc = batch.encodings[i];
        OutJson tokens = OutJson::array();
        for (int64_t id : enc.ids) tokens.push_back(model.tokenizer().id_to_token(id));
        o["tokens"] = tokens;
        o["outputs"] = OutJson::object();
        for (size_t k = 0; k < model.outputs().size(); ++k) {
          const auto& spec = model.outputs()[k];
          auto v = out.at(spec.name)[row];
          auto axis = std::find(spec.shape.begin(), spec.shape.end(), "sequence_length");
          if (axis != spec.shape.end())
            v = v.narrow(int64_t(axis - spec.shape.begin()) - 1, 0, int64_t(enc.ids.size()));
          OutJson entry;
          entry["shape"] = std::vector<int64_t>(v.sizes().begin(), v.sizes().end());
          entry["data"] = floats_of(v);
          o["outputs"][spec.name] = entry;
        }
      }
      OutJson r;
      r["input"] = input;
      r["output"] = o;
      results.push_back(r);
    }
  }
  OutJson doc;
  doc["schema"] = "hf-torchscript/run/1";
  doc["artifact"] = a.directory;
  doc["task"] = task;
  doc["model_type"] = model.manifest().value("model_type", "");
  doc["results"] = results;
  doc["similarity"] = nullptr;
  const int64_t nulls = count_nulls(results);
  if (nulls) warnings.push_back(std::to_string(nulls) + " NaN/infinite values were written as null");
  doc["warnings"] = warnings;
  doc["nonfinite_outputs"] = std::max(nonfinite, nulls);
  for (const auto& w : doc["warnings"]) std::cerr << "warning: " << w.get<std::string>() << "\n";
  std::cout << doc.dump(-1, ' ', false, OutJson::error_handler_t::replace) << "\n";
  return std::max(nonfinite, nulls) ? kExitNonFinite : 0;
}

// --generate with text prompts: `hf-torchscript run ARTIFACT PROMPT --json`'s document, or the text as
// it is generated (--stream, one line per prompt).
int generate_texts(hts::Model& model, const Args& a) {
  const auto items = read_text_items(a);
  hts::Generator generator(model);
  OutJson results = OutJson::array();
  std::function<void(const std::string&)> on_text;
  if (a.stream) on_text = [](const std::string& piece) { std::cout << piece << std::flush; };
  for (const auto& item : items) {
    if (item.has_pair) throw hts::Error("--generate takes prompts, not (text, pair) inputs");
    auto g = generator.generate_text(item.text, a.sampling, a.stop, on_text);
    if (a.stream) {
      std::cout << "\n" << std::flush;
      continue;
    }
    OutJson t;  // the Python runtime's timings keys
    t["prefill_s"] = g.stats.prefill_s;
    t["prompt_tokens"] = g.stats.prompt_tokens;
    t["tokens"] = g.stats.tokens;
    t["decode_s"] = g.stats.decode_s;
    t["first_token_s"] = g.first_token_s;
    t["total_s"] = g.total_s;
    if (g.stats.tokens > 1 && g.stats.decode_s > 0) t["decode_tokens_per_s"] = double(g.stats.tokens - 1) / g.stats.decode_s;
    if (g.stats.prefill_s > 0) t["prefill_tokens_per_s"] = double(g.stats.prompt_tokens) / g.stats.prefill_s;
    OutJson o;
    o["text"] = g.text;
    o["token_ids"] = g.token_ids;
    o["prompt_ids"] = g.prompt_ids;
    o["finish_reason"] = g.finish_reason;
    o["timings"] = t;
    OutJson r;
    r["input"] = {{"text", item.text}};
    r["output"] = o;
    results.push_back(r);
  }
  if (a.stream) return 0;
  OutJson doc;
  doc["schema"] = "hf-torchscript/run/1";
  doc["artifact"] = a.directory;
  doc["task"] = model.task();
  doc["model_type"] = model.manifest().value("model_type", "");
  doc["results"] = results;
  doc["similarity"] = nullptr;
  doc["warnings"] = OutJson::array();
  std::cout << doc.dump(-1, ' ', false, OutJson::error_handler_t::replace) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    args = parse_args(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "error: " << e.what() << "\n" << kUsage << "\n";
    return 2;
  }
  try {
    if (args.threads > 0) at::set_num_threads(args.threads);
    hts::Model model(args.directory);
    if (args.generate) {
      if (args.text_mode()) return generate_texts(model, args);
      if (args.ids.empty()) throw hts::Error("--generate needs a prompt: --text PROMPT, or token ids: --ids 1,2,3");
      hts::Generator generator(model);
      const auto t0 = std::chrono::steady_clock::now();
      auto tokens = generator.generate(args.ids, args.sampling);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      OutJson out;
      out["generation"] = {{"prompt_ids", args.ids}, {"token_ids", tokens}, {"seconds", seconds}};
      std::cout << out.dump() << "\n";
      return 0;
    }
    if (args.text_mode()) return run_texts(model, args);
    auto inputs = to_tensors(read_input(args.input, args.max_input_bytes), model);
    return args.bench ? bench(model, inputs, args.bench, args.warmup) : print_outputs(model, inputs, args.outputs);
  } catch (const hts::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::cerr << "error: " << what.substr(0, what.find('\n')) << "\n";
  }
  return 1;
}
