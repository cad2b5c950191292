// hts_run: run an hf-torchscript artifact on token ids from JSON and print its outputs as JSON.
//
//   hts_run OUTPUT_DIR [INPUT_JSON|-] [--outputs NAME,...] [--threads T] [--max-input-bytes B]
//   hts_run OUTPUT_DIR [INPUT_JSON|-] --bench N [--warmup W] [--threads T]
//   hts_run OUTPUT_DIR --generate --ids 1,2,3 [--max-new-tokens N] [--do-sample] [--temperature T]
//           [--top-k K] [--top-p P] [--seed S]     (text-generation artifacts: token ids in, token ids out)
//
// Input (a file, or stdin when INPUT_JSON is "-" or absent): one nested list per manifest input,
//   {"input_ids": [[101, 7592, 102]], "attention_mask": [[1, 1, 1]], "token_type_ids": [[0, 0, 0]]}
// rows padded to one length with the input's pad_value (manifest.json) and attention_mask 0.
// Output: {"outputs": {"<name>": {"dtype": "float32", "shape": [1, 384], "data": [[...]]}, ...}}
// in manifest order; floats are printed with the shortest text that reads back to the same float32.
// --bench: {"bench": {"calls": N, "warmup": W, "median_ms": ..., "p90_ms": ..., ...}} instead.
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
    "[--max-input-bytes B]\n       hts_run OUTPUT_DIR --generate --ids 1,2,3 [--max-new-tokens N] [--do-sample] "
    "[--temperature T] [--top-k K] [--top-p P] [--seed S]";

struct Args {
  std::string directory;
  std::string input = "-";
  std::vector<std::string> outputs;
  int bench = 0;
  int warmup = -1;
  int threads = 0;
  size_t max_input_bytes = size_t(256) << 20;
  bool generate = false;
  std::vector<int64_t> ids;
  hts::SamplingConfig sampling;
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
      if (args.ids.empty()) throw hts::Error("--generate needs the prompt's token ids: --ids 1,2,3");
      hts::Generator generator(model);
      const auto t0 = std::chrono::steady_clock::now();
      auto tokens = generator.generate(args.ids, args.sampling);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      OutJson out;
      out["generation"] = {{"prompt_ids", args.ids}, {"token_ids", tokens}, {"seconds", seconds}};
      std::cout << out.dump() << "\n";
      return 0;
    }
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
