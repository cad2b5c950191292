// hts_tokenize: encode lines of JSON with a tokenizer.json through cpp/hts_tokenizer.hpp.
//
//   hts_tokenize TOKENIZER_JSON [INPUT_JSONL|-] [--no-special] [--decode] [--compact] [--batch K] [--bench N]
//
// Each input line is {"text": "..."} or {"text": "...", "pair": "..."}; raw bytes (for text that is
// not UTF-8, which JSON cannot carry) as {"hex": "c3a9"} / {"pair_hex": "..."}. Each output line is
// {"ids": [...], "type_ids": [...], "attention_mask": [...]} (+ "decoded" with --decode), or
// {"error": "<one line>"} when that text cannot be encoded; the run goes on with the next line.
// --compact: "IDS|TYPE_IDS|MASK" (space-separated ints; + TAB + the decoded text as JSON with --decode)
// or "error: <one line>" per line, cheaper to compare over large corpora.
// --batch K: encode groups of K lines with encode_batch (padded to a common length), one output line each.
// --bench N: encode every line N times (after one warm-up pass) and print
// {"texts": T, "passes": N, "seconds": S} instead; single thread.
// Exit 1 with "error: <one line>" on stderr when the tokenizer.json or the input file is unusable.
#include "hts_tokenizer.hpp"

#include <chrono>
#include <iostream>

namespace {

std::string from_hex(const std::string& hex) {
  if (hex.size() % 2) throw hf_torchscript::TokenizerError("hex text has an odd number of digits");
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) out.push_back(char(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

struct Item {
  std::string text, pair;
  bool has_pair = false;
};

Item parse_line(const std::string& line) {
  auto j = nlohmann::json::parse(line);
  Item item;
  item.text = j.contains("hex") ? from_hex(j["hex"].get<std::string>()) : j.at("text").get<std::string>();
  if (j.contains("pair") || j.contains("pair_hex")) {
    item.has_pair = true;
    item.pair = j.contains("pair_hex") ? from_hex(j["pair_hex"].get<std::string>()) : j["pair"].get<std::string>();
  }
  return item;
}

}  // namespace

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  if (argc < 2) {
    std::cerr << "usage: hts_tokenize TOKENIZER_JSON [INPUT_JSONL|-] [--no-special] [--decode] [--bench N]\n";
    return 2;
  }
  std::string input = "-";
  bool special = true, decode = false, compact = false;
  int bench = 0;
  size_t batch = 0;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--no-special") special = false;
    else if (a == "--decode") decode = true;
    else if (a == "--compact") compact = true;
    else if (a == "--bench" && i + 1 < argc) bench = std::stoi(argv[++i]);
    else if (a == "--batch" && i + 1 < argc) batch = std::stoul(argv[++i]);
    else input = a;
  }
  try {
    auto tok = hf_torchscript::Tokenizer::from_file(argv[1]);
    std::ifstream file;
    if (input != "-") {
      file.open(input, std::ios::binary);
      if (!file) throw hf_torchscript::TokenizerError("cannot read " + input);
    }
    std::istream& in = input == "-" ? std::cin : file;
    std::string line;
    if (bench > 0) {
      std::vector<Item> items;
      while (std::getline(in, line))
        if (!line.empty()) items.push_back(parse_line(line));
      size_t sink = 0;
      auto pass = [&] {
        for (auto& it : items) {
          try {
            sink += tok.encode(it.text, it.has_pair ? &it.pair : nullptr, special).ids.size();
          } catch (const hf_torchscript::TokenizerError&) {
          }
        }
      };
      pass();
      const size_t tokens = sink;  // per pass (the warm-up pass)
      auto t0 = std::chrono::steady_clock::now();
      for (int k = 0; k < bench; ++k) pass();
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::cout << nlohmann::json{{"texts", items.size()}, {"passes", bench}, {"seconds", s}, {"tokens", tokens}, {"checksum", sink}}.dump()
                << "\n";
      return 0;
    }
    auto ints = [](const std::vector<int64_t>& v) {
      std::string s;
      for (size_t k = 0; k < v.size(); ++k) {
        if (k) s += ' ';
        s += std::to_string(v[k]);
      }
      return s;
    };
    auto emit = [&](const hf_torchscript::Encoding& e) {
      std::string decoded = decode ? tok.decode(e.ids) : "";
      if (compact) {
        std::cout << ints(e.ids) << '|' << ints(e.type_ids) << '|' << ints(e.attention_mask);
        if (decode) std::cout << '\t' << nlohmann::json(decoded).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        std::cout << '\n';
        return;
      }
      nlohmann::json out = {{"ids", e.ids}, {"type_ids", e.type_ids}, {"attention_mask", e.attention_mask}};
      if (decode) out["decoded"] = decoded;
      std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    };
    auto fail = [&](const std::exception& err) {
      if (compact)
        std::cout << "error: " << err.what() << "\n";
      else
        std::cout << nlohmann::json{{"error", err.what()}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                  << "\n";
    };
    std::vector<Item> group;
    auto flush = [&] {
      if (group.empty()) return;
      std::vector<std::string> texts, pairs;
      for (auto& it : group) {
        texts.push_back(it.text);
        if (it.has_pair) pairs.push_back(it.pair);
      }
      try {
        for (auto& e : tok.encode_batch(texts, pairs, special)) emit(e);
      } catch (const hf_torchscript::TokenizerError& err) {
        for (size_t k = 0; k < group.size(); ++k) fail(err);
      }
      group.clear();
    };
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      if (batch) {
        group.push_back(parse_line(line));
        if (group.size() == batch) flush();
        continue;
      }
      try {
        Item it = parse_line(line);
        emit(tok.encode(it.text, it.has_pair ? &it.pair : nullptr, special));
      } catch (const hf_torchscript::TokenizerError& err) {
        fail(err);
      }
    }
    flush();
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
