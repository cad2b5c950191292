// hts_tokenizer.hpp: a Hugging Face `tokenizers` tokenizer in C++, read from the artifact's own
// tokenizer.json. Header-only; needs nlohmann/json, libutf8proc (Unicode categories, case mapping,
// NFC/NFD/NFKC/NFKD) and PCRE2 (8-bit, for the Split/ByteLevel/Whitespace regexes):
//   apt-get install libutf8proc-dev libpcre2-dev      # link: -lutf8proc -lpcre2-8
//
//   hf_torchscript::Tokenizer tok = hf_torchscript::Tokenizer::from_file("artifact/tokenizer.json");
//   hf_torchscript::Encoding e = tok.encode("Hello world");          // e.ids, e.attention_mask, e.type_ids
//   hf_torchscript::Encoding p = tok.encode("question", "context");  // a pair: type_ids 0 then 1
//   std::vector<hf_torchscript::Encoding> b = tok.encode_batch({"a", "longer text"});  // padded alike
//   std::string text = tok.decode(e.ids);                            // skips special tokens
//
// It follows the Rust crate's algorithms step by step (added tokens split before normalization,
// normalizer, pre-tokenizer, model, truncation, post-processor, padding), and is tested for equal
// ids/type_ids/attention_mask against the Python `tokenizers` library (tests/test_cpp_tokenizer.py).
// Offsets are not tracked. A component this file does not implement makes from_file() throw one line
// naming it (hf_torchscript.runtime.cpp_tokenizer_support lists the same set, for export's manifest);
// text that is not valid UTF-8 makes encode() throw one line with the byte offset.
#pragma once

#include <nlohmann/json.hpp>
#include <utf8proc.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "hts_unicode_compat.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <queue>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace hf_torchscript {

// One line: what is wrong and what to do. Thrown for bad tokenizer.json, unsupported components and
// bad input text.
class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The result of encoding one text (or pair): ids with the special tokens, truncation and padding applied.
struct Encoding {
  std::vector<int64_t> ids;
  std::vector<int64_t> type_ids;
  std::vector<int64_t> attention_mask;
  std::vector<int64_t> special_tokens_mask;
};

namespace tok_detail {

using json = nlohmann::json;
using u32 = std::u32string;

// ---- UTF-8 ----

// Throws with the byte offset of the first invalid sequence (overlong forms, surrogates and code
// points above U+10FFFF are invalid, as in Rust's str).
inline void validate_utf8(const std::string& s, const char* what = "text") {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned c = p[i];
    size_t len = 0;
    uint32_t cp = 0, min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    }
    bool ok = len != 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if (ok && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) ok = false;
    if (!ok) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "0x%02X", c);
      throw TokenizerError(std::string(what) + " is not valid UTF-8 (byte " + buf + " at offset " +
                           std::to_string(i) + "); pass UTF-8 encoded text");
    }
    i += len;
  }
}

// Decodes UTF-8 that is already validated.
inline u32 to_u32(const std::string& s) {
  u32 out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned c = p[i];
    if (c < 0x80) {
      out.push_back(c), ++i;
    } else if ((c & 0xE0) == 0xC0) {
      out.push_back(((c & 0x1F) << 6) | (p[i + 1] & 0x3F)), i += 2;
    } else if ((c & 0xF0) == 0xE0) {
      out.push_back(((c & 0x0F) << 12) | ((p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F)), i += 3;
    } else {
      out.push_back(((c & 0x07) << 18) | ((p[i + 1] & 0x3F) << 12) | ((p[i + 2] & 0x3F) << 6) | (p[i + 3] & 0x3F));
      i += 4;
    }
  }
  return out;
}

inline void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(char(c));
  } else if (c < 0x800) {
    out.push_back(char(0xC0 | (c >> 6)));
    out.push_back(char(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(char(0xE0 | (c >> 12)));
    out.push_back(char(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(char(0x80 | (c & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (c >> 18)));
    out.push_back(char(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(char(0x80 | (c & 0x3F)));
  }
}

inline std::string to_utf8(const u32& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

inline size_t utf8_len(unsigned char c) { return c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4; }

inline size_t char_count(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// Like String::from_utf8_lossy: each maximal invalid prefix becomes U+FFFD.
inline std::string utf8_lossy(const std::string& s) {
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned c = p[i];
    if (c < 0x80) {
      out.push_back(char(c)), ++i;
      continue;
    }
    size_t len = (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
    size_t k = 1;
    if (len) {
      for (; k < len && i + k < n; ++k) {
        unsigned b = p[i + k];
        unsigned lo = 0x80, hi = 0xBF;
        if (k == 1) {
          if (c == 0xE0) lo = 0xA0;
          if (c == 0xED) hi = 0x9F;
          if (c == 0xF0) lo = 0x90;
          if (c == 0xF4) hi = 0x8F;
        }
        if (b < lo || b > hi) break;
      }
    }
    if (len && k == len) {
      out.append(s, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      i += std::max<size_t>(k, 1);
    }
  }
  return out;
}

// ---- Unicode properties (utf8proc's tables) ----

inline utf8proc_category_t category(char32_t c) { return utf8proc_category(utf8proc_int32_t(c)); }

// Rust's char::is_whitespace (the White_Space property): the Z categories plus these controls.
inline bool is_whitespace(char32_t c) {
  if ((c >= 9 && c <= 13) || c == 0x85) return true;
  if (c < 0x80) return c == ' ';
  auto cat = category(c);
  return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
}

// The crate's three classes from the `unicode_categories` crate (punctuation, "other", non-spacing
// mark) use tables older than utf8proc's; hts_unicode_compat.hpp (generated against the Python
// library by scripts/gen_unicode_compat.py) lists the code points where they disagree.
inline bool is_punctuation(char32_t c) {
  auto cat = category(c);
  if (cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO) return !tok_compat::in(tok_compat::punct_remove, c);
  return tok_compat::in(tok_compat::punct_add, c);
}

inline bool is_other(char32_t c) {  // Cc, Cf, Co, Cs; unassigned code points stay
  auto cat = category(c);
  if (cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_CO ||
      cat == UTF8PROC_CATEGORY_CS)
    return !tok_compat::in(tok_compat::other_remove, c);
  return tok_compat::in(tok_compat::other_add, c);
}

inline bool is_mark_nonspacing(char32_t c) {
  if (category(c) == UTF8PROC_CATEGORY_MN) return !tok_compat::in(tok_compat::mn_remove, c);
  return tok_compat::in(tok_compat::mn_add, c);
}

// BERT's punctuation: ASCII punctuation (includes $+<=>^`|~, which are symbols in Unicode) or P*.
inline bool is_bert_punctuation(char32_t c) {
  if (c < 0x80) return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
  return is_punctuation(c);
}


inline bool is_chinese_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// char::to_lowercase: utf8proc's simple mapping, plus the one unconditional multi-character
// lowercase mapping of SpecialCasing.txt (U+0130 -> "i" + U+0307).
inline void append_lower(u32& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
  } else if (c == 0x130) {
    out.push_back('i');
    out.push_back(0x307);
  } else {
    out.push_back(char32_t(utf8proc_tolower(utf8proc_int32_t(c))));
  }
}

inline std::string lowercase(const std::string& s) {
  bool ascii = true;
  for (unsigned char c : s) ascii = ascii && c < 0x80;
  if (ascii) {
    std::string out = s;
    for (auto& c : out)
      if (c >= 'A' && c <= 'Z') c = char(c + 32);
    return out;
  }
  u32 out;
  for (char32_t c : to_u32(s)) append_lower(out, c);
  return to_utf8(out);
}

inline std::string unicode_normalize(const std::string& s, const std::string& form) {
  bool ascii = true;
  for (unsigned char c : s) ascii = ascii && c < 0x80;
  if (ascii || s.empty()) return s;
  auto map1 = [](const std::string& part, int options) {
    if (part.empty()) return part;
    utf8proc_uint8_t* out = nullptr;
    auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(part.data()), utf8proc_ssize_t(part.size()), &out,
                          utf8proc_option_t(options));
    if (n < 0) throw TokenizerError(std::string("Unicode normalization failed: ") + utf8proc_errmsg(n));
    std::string result(reinterpret_cast<char*>(out), size_t(n));
    std::free(out);
    return result;
  };
  int options = UTF8PROC_STABLE;
  if (form == "NFC") options |= UTF8PROC_COMPOSE;
  if (form == "NFD") options |= UTF8PROC_DECOMPOSE;
  if (form == "NFKC") options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
  if (form == "NFKD") options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
  auto map = [&](const std::string& part) { return map1(part, options); };
  // Characters the crate's older normalization tables do not know stay as they are and block
  // reordering/composition around them: normalize the runs between them.
  std::string result, run;
  bool any = false;
  for (char32_t c : to_u32(s)) {
    if (c >= 0x80 && tok_compat::in(tok_compat::normalization_protect, c)) {
      result += map(run);
      run.clear();
      append_utf8(result, c);
      any = true;
    } else {
      append_utf8(run, c);
    }
  }
  if (!any) return map(s);
  return result + map(run);
}

inline std::string strip_marks(const std::string& s) {  // drops Mn (non-spacing marks)
  u32 out;
  for (char32_t c : to_u32(s))
    if (c < 0x300 || !is_mark_nonspacing(c)) out.push_back(c);
  return to_utf8(out);
}

// ---- regex (PCRE2, UTF + Unicode properties, like the crate's Oniguruma regexes) ----

// Oniguruma's \s (the crate's regex engine) is the White_Space property; PCRE2's also matches
// U+180E (in its \h list). Spell \s / \S out as White_Space classes, outside \Q...\E.
inline std::string onig_spaces(const std::string& p) {
  static const std::string ws =
      "\\t\\n\\x0B\\f\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";
  std::string out;
  bool in_class = false, quoted = false;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (quoted) {
      out.push_back(c);
      if (c == '\\' && i + 1 < p.size() && p[i + 1] == 'E') out.push_back(p[++i]), quoted = false;
      continue;
    }
    if (c == '\\' && i + 1 < p.size()) {
      char d = p[++i];
      if (d == 's') {
        out += in_class ? ws : "[" + ws + "]";
      } else if (d == 'S' && !in_class) {
        out += "[^" + ws + "]";
      } else {
        out.push_back(c);
        out.push_back(d);
        if (d == 'Q') quoted = true;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      if (i + 1 < p.size() && p[i + 1] == '^') out.push_back(p[++i]);
      if (i + 1 < p.size() && p[i + 1] == ']') out.push_back(p[++i]);  // a literal ] first
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out.push_back(c);
  }
  return out;
}

class Regex {
 public:
  explicit Regex(const std::string& given) : pattern_(given) {
    const std::string pattern = onig_spaces(given);
    int err = 0;
    PCRE2_SIZE off = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err,
                          &off, nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw TokenizerError("tokenizer.json regex " + json(pattern).dump() + " does not compile with PCRE2 at offset " +
                           std::to_string(off) + ": " + reinterpret_cast<char*>(msg));
    }
    jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
  }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex() { pcre2_code_free(code_); }

  // Non-overlapping matches as byte ranges; an empty match advances by one character.
  std::vector<std::pair<size_t, size_t>> find_all(const std::string& s) const {
    std::vector<std::pair<size_t, size_t>> out;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t pos = 0;
    while (pos <= s.size()) {
      int rc = jit_ ? pcre2_jit_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos, 0, md, nullptr)
                    : pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos, PCRE2_NO_UTF_CHECK, md,
                                  nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        pcre2_match_data_free(md);
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        throw TokenizerError("regex " + json(pattern_).dump() + " failed: " + reinterpret_cast<char*>(msg));
      }
      PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      size_t a = ov[0], b = ov[1];
      if (b == a) {
        if (a >= s.size()) break;
        pos = a + utf8_len(static_cast<unsigned char>(s[a]));
        continue;  // empty matches split nothing
      }
      out.emplace_back(a, b);
      pos = b;
    }
    pcre2_match_data_free(md);
    return out;
  }

 private:
  std::string pattern_;
  pcre2_code* code_ = nullptr;
  bool jit_ = false;
};

// A word character as the crate's single_word check sees it: Rust regex's \w (Alphabetic, marks,
// decimal digits, connector punctuation, Join_Control), from PCRE2's Unicode tables (utf8proc has no
// Alphabetic property). Only single_word added tokens ask, once per match.
inline bool is_word_char(char32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  static const Regex re(R"(^[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]$)");
  std::string s;
  append_utf8(s, c);
  return !re.find_all(s).empty();
}

// Rust-regex/onig escaping of a literal pattern.
inline std::string regex_escape(const std::string& s) {
  std::string out = "\\Q";
  for (size_t i = 0; i < s.size(); ++i) {
    if (s.compare(i, 2, "\\E") == 0) {
      out += "\\E\\\\E\\Q";
      ++i;
    } else {
      out.push_back(s[i]);
    }
  }
  return out + "\\E";
}

// ---- pieces of text between normalization and the model ----

struct Piece {
  std::string text;
  bool at_start = false;  // begins at offset 0 of the original text (Metaspace prepend_scheme "first")
};

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

inline Behavior behavior_of(const std::string& name) {
  if (name == "Removed") return Behavior::Removed;
  if (name == "Isolated") return Behavior::Isolated;
  if (name == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::MergedWithNext;
  if (name == "Contiguous") return Behavior::Contiguous;
  throw TokenizerError("tokenizer.json: unknown split behavior " + json(name).dump());
}

// NormalizedString::split: matches are (start, end, is_match) covering the whole text.
inline void split_by(const Piece& p, std::vector<std::pair<size_t, size_t>> matches, Behavior behavior, bool invert,
                     std::vector<Piece>& out) {
  const std::string& s = p.text;
  std::vector<std::tuple<size_t, size_t, bool>> segs;
  size_t last = 0;
  for (auto& m : matches) {
    if (m.first > last) segs.emplace_back(last, m.first, invert);
    segs.emplace_back(m.first, m.second, !invert);
    last = m.second;
  }
  if (last < s.size()) segs.emplace_back(last, s.size(), invert);
  std::vector<std::pair<size_t, size_t>> pieces;
  switch (behavior) {
    case Behavior::Removed:
      for (auto& [a, b, m] : segs)
        if (!m) pieces.emplace_back(a, b);
      break;
    case Behavior::Isolated:
      for (auto& [a, b, m] : segs) pieces.emplace_back(a, b);
      break;
    case Behavior::Contiguous: {
      bool prev_match = false;
      for (auto& [a, b, m] : segs) {
        if (m && prev_match && !pieces.empty())
          pieces.back().second = b;
        else
          pieces.emplace_back(a, b);
        prev_match = m;
      }
      break;
    }
    case Behavior::MergedWithPrevious: {
      bool prev_match = false;
      for (auto& [a, b, m] : segs) {
        if (m && !prev_match && !pieces.empty())
          pieces.back().second = b;
        else
          pieces.emplace_back(a, b);
        prev_match = m;
      }
      break;
    }
    case Behavior::MergedWithNext: {
      bool prev_match = false;
      for (auto& [a, b, m] : segs) {
        if (prev_match && !m && !pieces.empty())
          pieces.back().second = b;
        else
          pieces.emplace_back(a, b);
        prev_match = m;
      }
      break;
    }
  }
  for (auto& [a, b] : pieces)
    if (b > a) out.push_back(Piece{s.substr(a, b - a), p.at_start && a == 0});
}

// Matches of single characters chosen by a predicate, as byte ranges.
template <class Pred>
std::vector<std::pair<size_t, size_t>> char_matches(const std::string& s, Pred pred) {
  std::vector<std::pair<size_t, size_t>> out;
  size_t i = 0;
  const u32 cs = to_u32(s);
  for (char32_t c : cs) {
    std::string enc;
    append_utf8(enc, c);
    if (pred(c)) out.emplace_back(i, i + enc.size());
    i += enc.size();
  }
  return out;
}

// ---- GPT-2 byte <-> unicode table ----

inline const std::vector<char32_t>& bytes_to_unicode() {
  static const std::vector<char32_t> table = [] {
    std::vector<char32_t> t(256);
    char32_t n = 0;
    for (int b = 0; b < 256; ++b) {
      bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      t[b] = keep ? char32_t(b) : 256 + n++;
    }
    return t;
  }();
  return table;
}

inline const std::vector<std::string>& byte_strings() {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    for (int b = 0; b < 256; ++b) append_utf8(t[b], bytes_to_unicode()[b]);
    return t;
  }();
  return table;
}

inline const std::unordered_map<char32_t, unsigned char>& unicode_to_bytes() {
  static const std::unordered_map<char32_t, unsigned char> table = [] {
    std::unordered_map<char32_t, unsigned char> t;
    for (int b = 0; b < 256; ++b) t[bytes_to_unicode()[b]] = static_cast<unsigned char>(b);
    return t;
  }();
  return table;
}

inline const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

inline std::string type_of(const json& j, const char* where) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    throw TokenizerError(std::string("tokenizer.json: ") + where + " has no \"type\"");
  return j["type"].get<std::string>();
}

inline std::string pattern_of(const json& j, const char* where) {
  if (j.contains("String")) return regex_escape(j["String"].get<std::string>());
  if (j.contains("Regex")) return j["Regex"].get<std::string>();
  throw TokenizerError(std::string("tokenizer.json: ") + where + " pattern is neither String nor Regex");
}

[[noreturn]] inline void unsupported(const std::string& kind, const std::string& name) {
  throw TokenizerError("tokenizer.json uses the " + kind + " " + name +
                       ", which the C++ tokenizer does not implement; tokenize in Python and pass ids");
}

// ---- normalizers ----

struct Normalizer {
  virtual ~Normalizer() = default;
  virtual std::string normalize(const std::string& s) const = 0;
};

struct BertNormalizer : Normalizer {
  bool clean_text = true, chinese = true, strip_accents = true, lower = true;
  std::string normalize(const std::string& s) const override {
    u32 out;
    u32 in = to_u32(s);
    out.reserve(in.size());
    for (char32_t c : in) {
      if (clean_text) {
        if (c == 0 || c == 0xFFFD) continue;
        if (c != '\t' && c != '\n' && c != '\r' && is_other(c)) continue;
        if (is_whitespace(c)) c = ' ';
      }
      if (chinese && c >= 0x3400 && is_chinese_char(c)) {
        out.push_back(' ');
        out.push_back(c);
        out.push_back(' ');
      } else {
        out.push_back(c);
      }
    }
    std::string r = to_utf8(out);
    if (strip_accents) r = strip_marks(unicode_normalize(r, "NFD"));
    if (lower) r = lowercase(r);
    return r;
  }
};

struct UnicodeNormalizer : Normalizer {
  std::string form;
  std::string normalize(const std::string& s) const override { return unicode_normalize(s, form); }
};

struct LowercaseNormalizer : Normalizer {
  std::string normalize(const std::string& s) const override { return lowercase(s); }
};

// The StripAccents normalizer drops every combining mark (Mn, Mc, Me: unicode-normalization's
// is_combining_mark), unlike BertNormalizer's accent stripping (Mn only).
struct StripAccentsNormalizer : Normalizer {
  std::string normalize(const std::string& s) const override {
    u32 out;
    for (char32_t c : to_u32(s)) {
      auto cat = category(c);
      bool mark = cat >= UTF8PROC_CATEGORY_MN && cat <= UTF8PROC_CATEGORY_ME
                      ? !tok_compat::in(tok_compat::mark_remove, c)
                      : tok_compat::in(tok_compat::mark_add, c);
      if (c < 0x300 || !mark) out.push_back(c);
    }
    return to_utf8(out);
  }
};

struct StripNormalizer : Normalizer {
  bool left = true, right = true;
  std::string normalize(const std::string& s) const override {
    u32 u = to_u32(s);
    size_t a = 0, b = u.size();
    if (left)
      while (a < b && is_whitespace(u[a])) ++a;
    if (right)
      while (b > a && is_whitespace(u[b - 1])) --b;
    return to_utf8(u.substr(a, b - a));
  }
};

struct PrependNormalizer : Normalizer {
  std::string prepend;
  std::string normalize(const std::string& s) const override { return s.empty() ? s : prepend + s; }
};

struct ReplaceNormalizer : Normalizer {
  std::unique_ptr<Regex> re;
  std::string content;
  std::string normalize(const std::string& s) const override {
    std::string out;
    size_t last = 0;
    for (auto& [a, b] : re->find_all(s)) {
      out.append(s, last, a - last);
      out += content;
      last = b;
    }
    out.append(s, last, std::string::npos);
    return out;
  }
};

struct SequenceNormalizer : Normalizer {
  std::vector<std::unique_ptr<Normalizer>> items;
  std::string normalize(const std::string& s) const override {
    std::string r = s;
    for (auto& n : items) r = n->normalize(r);
    return r;
  }
};

inline std::unique_ptr<Normalizer> make_normalizer(const json& j) {
  if (j.is_null()) return nullptr;
  std::string t = type_of(j, "normalizer");
  if (t == "BertNormalizer") {
    auto n = std::make_unique<BertNormalizer>();
    n->clean_text = j.value("clean_text", true);
    n->chinese = j.value("handle_chinese_chars", true);
    n->lower = j.value("lowercase", true);
    // strip_accents: null means "follow lowercase" (the Rust crate's rule).
    n->strip_accents = j.contains("strip_accents") && !j["strip_accents"].is_null() ? j["strip_accents"].get<bool>()
                                                                                    : n->lower;
    return n;
  }
  if (t == "NFC" || t == "NFD" || t == "NFKC" || t == "NFKD") {
    auto n = std::make_unique<UnicodeNormalizer>();
    n->form = t;
    return n;
  }
  if (t == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (t == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  if (t == "Strip") {
    auto n = std::make_unique<StripNormalizer>();
    n->left = j.value("strip_left", true);
    n->right = j.value("strip_right", true);
    return n;
  }
  if (t == "Prepend") {
    auto n = std::make_unique<PrependNormalizer>();
    n->prepend = j.at("prepend").get<std::string>();
    return n;
  }
  if (t == "Replace") {
    auto n = std::make_unique<ReplaceNormalizer>();
    n->re = std::make_unique<Regex>(pattern_of(j.at("pattern"), "Replace"));
    n->content = j.at("content").get<std::string>();
    return n;
  }
  if (t == "Sequence") {
    auto n = std::make_unique<SequenceNormalizer>();
    for (auto& item : j.at("normalizers"))
      if (auto m = make_normalizer(item)) n->items.push_back(std::move(m));
    return n;
  }
  unsupported("normalizer", t);
}

// ---- pre-tokenizers ----

struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  virtual void split(const Piece& p, std::vector<Piece>& out) const = 0;
};

struct BertPreTokenizer : PreTokenizer {
  void split(const Piece& p, std::vector<Piece>& out) const override {
    // whitespace removed, then punctuation isolated
    std::vector<Piece> words;
    split_by(p, char_matches(p.text, is_whitespace), Behavior::Removed, false, words);
    for (auto& w : words) split_by(w, char_matches(w.text, is_bert_punctuation), Behavior::Isolated, false, out);
  }
};

struct WhitespaceSplitPreTokenizer : PreTokenizer {
  void split(const Piece& p, std::vector<Piece>& out) const override {
    split_by(p, char_matches(p.text, is_whitespace), Behavior::Removed, false, out);
  }
};

struct PunctuationPreTokenizer : PreTokenizer {
  Behavior behavior = Behavior::Isolated;
  void split(const Piece& p, std::vector<Piece>& out) const override {
    split_by(p, char_matches(p.text, is_bert_punctuation), behavior, false, out);
  }
};

struct RegexPreTokenizer : PreTokenizer {  // Split, Whitespace
  std::unique_ptr<Regex> re;
  Behavior behavior = Behavior::Isolated;
  bool invert = false;
  void split(const Piece& p, std::vector<Piece>& out) const override {
    split_by(p, re->find_all(p.text), behavior, invert, out);
  }
};

struct DigitsPreTokenizer : PreTokenizer {
  bool individual = false;
  void split(const Piece& p, std::vector<Piece>& out) const override {
    auto digit = [](char32_t c) { return category(c) == UTF8PROC_CATEGORY_ND; };  // char::is_numeric ~ N*
    auto numeric = [](char32_t c) {
      auto cat = category(c);
      return cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO;
    };
    (void)digit;
    split_by(p, char_matches(p.text, numeric), individual ? Behavior::Isolated : Behavior::Contiguous, false, out);
  }
};

struct CharDelimiterPreTokenizer : PreTokenizer {
  char32_t delimiter = ' ';
  void split(const Piece& p, std::vector<Piece>& out) const override {
    char32_t d = delimiter;
    split_by(p, char_matches(p.text, [d](char32_t c) { return c == d; }), Behavior::Removed, false, out);
  }
};

struct ByteLevelPreTokenizer : PreTokenizer {
  bool add_prefix_space = true, use_regex = true;
  std::unique_ptr<Regex> re;
  void split(const Piece& p, std::vector<Piece>& out) const override {
    Piece q = p;
    if (add_prefix_space && !q.text.empty() && q.text[0] != ' ') q.text = " " + q.text;
    std::vector<Piece> parts;
    if (use_regex)
      split_by(q, re->find_all(q.text), Behavior::Isolated, false, parts);
    else if (!q.text.empty())
      parts.push_back(q);
    const auto& table = byte_strings();
    for (auto& part : parts) {
      std::string mapped;
      mapped.reserve(part.text.size() * 2);
      for (unsigned char b : part.text) mapped += table[b];
      out.push_back(Piece{std::move(mapped), part.at_start});
    }
  }
};

struct MetaspacePreTokenizer : PreTokenizer {
  std::string replacement = "\xE2\x96\x81";
  std::string scheme = "always";
  bool split_pieces = true;
  void split(const Piece& p, std::vector<Piece>& out) const override {
    std::string s;
    for (char c : p.text) {
      if (c == ' ')
        s += replacement;
      else
        s.push_back(c);
    }
    bool starts = s.compare(0, replacement.size(), replacement) == 0;
    if (!starts && (scheme == "always" || (scheme == "first" && p.at_start))) s = replacement + s;
    Piece q{s, p.at_start};
    if (!split_pieces) {
      if (!s.empty()) out.push_back(q);
      return;
    }
    std::vector<std::pair<size_t, size_t>> matches;
    for (size_t i = s.find(replacement); i != std::string::npos; i = s.find(replacement, i + replacement.size()))
      matches.emplace_back(i, i + replacement.size());
    split_by(q, matches, Behavior::MergedWithNext, false, out);
  }
};

struct SequencePreTokenizer : PreTokenizer {
  std::vector<std::unique_ptr<PreTokenizer>> items;
  void split(const Piece& p, std::vector<Piece>& out) const override {
    std::vector<Piece> cur{p}, next;
    for (auto& item : items) {
      next.clear();
      for (auto& q : cur) item->split(q, next);
      cur.swap(next);
    }
    for (auto& q : cur) out.push_back(std::move(q));
  }
};

inline std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j) {
  if (j.is_null()) return nullptr;
  std::string t = type_of(j, "pre_tokenizer");
  if (t == "BertPreTokenizer") return std::make_unique<BertPreTokenizer>();
  if (t == "WhitespaceSplit") return std::make_unique<WhitespaceSplitPreTokenizer>();
  if (t == "Whitespace") {
    // The crate's \w+|[^\w\s]+ with Rust-regex classes: \w = Alphabetic, marks, Nd, Pc, Join_Control.
    auto p = std::make_unique<RegexPreTokenizer>();
    p->re = std::make_unique<Regex>(
        R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]+|[^\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}\p{White_Space}]+)");
    p->behavior = Behavior::Removed;
    p->invert = true;
    return p;
  }
  if (t == "Punctuation") {
    auto p = std::make_unique<PunctuationPreTokenizer>();
    p->behavior = behavior_of(j.value("behavior", std::string("Isolated")));
    return p;
  }
  if (t == "Split") {
    auto p = std::make_unique<RegexPreTokenizer>();
    p->re = std::make_unique<Regex>(pattern_of(j.at("pattern"), "Split"));
    p->behavior = behavior_of(j.at("behavior").get<std::string>());
    p->invert = j.value("invert", false);
    return p;
  }
  if (t == "Digits") {
    auto p = std::make_unique<DigitsPreTokenizer>();
    p->individual = j.value("individual_digits", false);
    return p;
  }
  if (t == "CharDelimiterSplit") {
    auto p = std::make_unique<CharDelimiterPreTokenizer>();
    p->delimiter = to_u32(j.at("delimiter").get<std::string>()).at(0);
    return p;
  }
  if (t == "ByteLevel") {
    auto p = std::make_unique<ByteLevelPreTokenizer>();
    p->add_prefix_space = j.value("add_prefix_space", true);
    p->use_regex = j.value("use_regex", true);
    if (p->use_regex) p->re = std::make_unique<Regex>(kGpt2Pattern);
    return p;
  }
  if (t == "Metaspace") {
    auto p = std::make_unique<MetaspacePreTokenizer>();
    p->replacement = j.value("replacement", std::string("\xE2\x96\x81"));
    if (j.contains("prepend_scheme"))
      p->scheme = j["prepend_scheme"].get<std::string>();
    else
      p->scheme = j.value("add_prefix_space", true) ? "always" : "never";
    p->split_pieces = j.value("split", true);
    return p;
  }
  if (t == "Sequence") {
    auto p = std::make_unique<SequencePreTokenizer>();
    for (auto& item : j.at("pretokenizers"))
      if (auto m = make_pre_tokenizer(item)) p->items.push_back(std::move(m));
    return p;
  }
  unsupported("pre-tokenizer", t);
}

// ---- models ----

struct Vocab {
  std::unordered_map<std::string, int64_t> token_to_id;
  std::vector<std::string> id_to_token;
  void add(const std::string& token, int64_t id) {
    token_to_id[token] = id;
    if (id >= int64_t(id_to_token.size())) id_to_token.resize(size_t(id) + 1);
    id_to_token[size_t(id)] = token;
  }
  const int64_t* find(const std::string& token) const {
    auto it = token_to_id.find(token);
    return it == token_to_id.end() ? nullptr : &it->second;
  }
};

struct Model {
  Vocab vocab;
  virtual ~Model() = default;
  virtual void tokenize(const std::string& s, std::vector<int64_t>& ids) const = 0;
};

struct WordPieceModel : Model {
  std::string unk, prefix = "##";
  size_t max_chars = 100;
  int64_t unk_id() const {
    auto id = vocab.find(unk);
    if (!id) throw TokenizerError("tokenizer.json: WordPiece unk_token " + json(unk).dump() + " is not in the vocab");
    return *id;
  }
  void tokenize(const std::string& s, std::vector<int64_t>& ids) const override {
    if (char_count(s) > max_chars) {
      ids.push_back(unk_id());
      return;
    }
    size_t first = ids.size(), start = 0;
    std::string sub;
    while (start < s.size()) {
      size_t end = s.size();
      const int64_t* found = nullptr;
      while (start < end) {
        sub.clear();
        if (start > 0) sub = prefix;
        sub.append(s, start, end - start);
        found = vocab.find(sub);
        if (found) break;
        --end;  // back to the previous character boundary
        while (end > start && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
      }
      if (!found) {
        ids.resize(first);
        ids.push_back(unk_id());
        return;
      }
      ids.push_back(*found);
      start = end;
    }
  }
};

struct WordLevelModel : Model {
  std::string unk;
  void tokenize(const std::string& s, std::vector<int64_t>& ids) const override {
    if (auto id = vocab.find(s)) {
      ids.push_back(*id);
    } else if (auto u = vocab.find(unk)) {
      ids.push_back(*u);
    } else {
      throw TokenizerError("the WordLevel vocab has neither " + json(s).dump() + " nor its unk_token " +
                           json(unk).dump());
    }
  }
};

struct BpeModel : Model {
  std::unordered_map<uint64_t, std::pair<uint32_t, int64_t>> merges;  // (a, b) -> (rank, merged id)
  std::string unk, prefix, suffix;
  bool has_unk = false, fuse_unk = false, byte_fallback = false, ignore_merges = false;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache;
  static constexpr size_t kCacheMax = 10000;

  static uint64_t key(int64_t a, int64_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  void tokenize(const std::string& s, std::vector<int64_t>& ids) const override {
    if (s.empty()) return;
    if (ignore_merges)
      if (auto id = vocab.find(s)) {
        ids.push_back(*id);
        return;
      }
    auto hit = cache.find(s);
    if (hit != cache.end()) {
      ids.insert(ids.end(), hit->second.begin(), hit->second.end());
      return;
    }
    std::vector<int64_t> word = merge_word(s);
    ids.insert(ids.end(), word.begin(), word.end());
    if (cache.size() < kCacheMax) cache.emplace(s, std::move(word));
  }

  std::vector<int64_t> merge_word(const std::string& w) const {
    std::vector<int64_t> syms;
    bool pending = false;
    int64_t pending_id = 0;
    size_t i = 0;
    std::string s;
    while (i < w.size()) {
      size_t len = utf8_len(static_cast<unsigned char>(w[i]));
      bool first = i == 0, last = i + len >= w.size();
      s.clear();
      if (!first) s = prefix;
      s.append(w, i, len);
      if (last) s += suffix;
      i += len;
      if (auto id = vocab.find(s)) {
        if (pending) syms.push_back(pending_id), pending = false;
        syms.push_back(*id);
        continue;
      }
      if (byte_fallback) {
        std::vector<int64_t> bytes;
        for (unsigned char b : s) {
          char code[8];
          std::snprintf(code, sizeof code, "<0x%02X>", b);
          auto id = vocab.find(code);
          if (!id) break;
          bytes.push_back(*id);
        }
        if (bytes.size() == s.size()) {  // (the crate adds these before a pending unk)
          syms.insert(syms.end(), bytes.begin(), bytes.end());
          continue;
        }
      }
      if (has_unk) {
        auto u = vocab.find(unk);
        if (!u) throw TokenizerError("tokenizer.json: BPE unk_token " + json(unk).dump() + " is not in the vocab");
        if (pending && !fuse_unk) syms.push_back(pending_id);
        pending = true;
        pending_id = *u;
      }
    }
    if (pending) syms.push_back(pending_id);
    return merge_all(std::move(syms));
  }

  std::vector<int64_t> merge_all(std::vector<int64_t> ids) const {
    size_t n = ids.size();
    if (n < 2) return ids;
    std::vector<int> prev(n), next(n);
    std::vector<char> alive(n, 1);
    for (size_t k = 0; k < n; ++k) prev[k] = int(k) - 1, next[k] = k + 1 < n ? int(k + 1) : -1;
    // (rank, pos, new id): smallest rank first, then leftmost
    using Item = std::tuple<uint32_t, int, int64_t>;
    std::priority_queue<Item, std::vector<Item>, std::greater<Item>> heap;
    auto push = [&](int a) {
      int b = next[a];
      if (b < 0) return;
      auto it = merges.find(key(ids[a], ids[b]));
      if (it != merges.end()) heap.emplace(it->second.first, a, it->second.second);
    };
    for (size_t k = 0; k + 1 < n; ++k) push(int(k));
    while (!heap.empty()) {
      auto [rank, a, new_id] = heap.top();
      heap.pop();
      if (!alive[a] || next[a] < 0) continue;
      int b = next[a];
      auto it = merges.find(key(ids[a], ids[b]));
      if (it == merges.end() || it->second.second != new_id) continue;
      ids[a] = new_id;
      alive[b] = 0;
      next[a] = next[b];
      if (next[b] >= 0) prev[next[b]] = a;
      if (prev[a] >= 0) push(prev[a]);
      push(a);
    }
    std::vector<int64_t> out;
    for (int k = 0; k >= 0; k = next[k]) out.push_back(ids[k]);
    return out;
  }
};

struct UnigramModel : Model {
  std::vector<double> scores;
  int64_t unk_id = -1;
  bool byte_fallback = false;
  double min_score = 0;
  // A byte trie over the pieces: node -> (byte -> child), and the id a node ends, if any.
  std::vector<std::unordered_map<unsigned char, int>> children{1};
  std::vector<int64_t> ends{-1};

  void insert(const std::string& piece, int64_t id) {
    int node = 0;
    for (unsigned char b : piece) {
      auto it = children[node].find(b);
      if (it == children[node].end()) {
        children.emplace_back();
        ends.push_back(-1);
        int child = int(children.size()) - 1;
        children[node][b] = child;
        node = child;
      } else {
        node = it->second;
      }
    }
    ends[node] = id;
  }

  void tokenize(const std::string& s, std::vector<int64_t>& ids) const override {
    if (s.empty()) return;
    const double unk_score = min_score - 10.0;
    size_t len = s.size();
    struct Node {
      double score = 0;
      long start = -1;
      int64_t id = -1;
    };
    std::vector<Node> best(len + 1);
    for (size_t at = 0; at < len;) {
      double here = best[at].score;
      size_t mblen = utf8_len(static_cast<unsigned char>(s[at]));
      bool single = false;
      int node = 0;
      for (size_t k = at; k < len; ++k) {
        auto it = children[node].find(static_cast<unsigned char>(s[k]));
        if (it == children[node].end()) break;
        node = it->second;
        int64_t id = ends[node];
        if (id < 0) continue;
        size_t end = k + 1;
        double cand = scores[size_t(id)] + here;
        if (best[end].start < 0 || cand > best[end].score) best[end] = Node{cand, long(at), id};
        if (end - at == mblen) single = true;
      }
      if (!single) {
        if (unk_id < 0) throw TokenizerError("tokenizer.json: the Unigram model has no unk_id and meets an unknown character");
        double cand = unk_score + here;
        if (best[at + mblen].start < 0 || cand > best[at + mblen].score) best[at + mblen] = Node{cand, long(at), unk_id};
      }
      at += mblen;
    }
    // walk back; consecutive unknowns fuse into one piece
    std::vector<std::string> pieces;
    std::string unk_run;
    bool in_unk = false;
    for (size_t end = len; end > 0;) {
      const Node& n = best[end];
      size_t start = size_t(n.start);
      if (n.id == unk_id) {
        unk_run.insert(0, s, start, end - start);
        in_unk = true;
      } else {
        if (in_unk) pieces.push_back(unk_run), unk_run.clear(), in_unk = false;
        pieces.push_back(s.substr(start, end - start));
      }
      end = start;
    }
    if (in_unk) pieces.push_back(unk_run);
    std::reverse(pieces.begin(), pieces.end());
    for (auto& p : pieces) {
      if (auto id = vocab.find(p)) {
        ids.push_back(*id);
        continue;
      }
      if (byte_fallback) {
        std::vector<int64_t> bytes;
        for (unsigned char b : p) {
          char code[8];
          std::snprintf(code, sizeof code, "<0x%02X>", b);
          auto id = vocab.find(code);
          if (!id) break;
          bytes.push_back(*id);
        }
        if (bytes.size() == p.size()) {
          ids.insert(ids.end(), bytes.begin(), bytes.end());
          continue;
        }
      }
      ids.push_back(unk_id);
    }
  }
};

inline std::unique_ptr<Model> make_model(const json& j) {
  std::string t = j.contains("type") ? j["type"].get<std::string>() : "";
  if (t.empty()) {  // older files: infer the model from its fields
    if (j.contains("merges"))
      t = "BPE";
    else if (j.contains("max_input_chars_per_word"))
      t = "WordPiece";
    else if (j.contains("unk_id"))
      t = "Unigram";
    else
      t = "WordLevel";
  }
  auto read_vocab = [&](Model& m) {
    for (auto& [token, id] : j.at("vocab").items()) m.vocab.add(token, id.get<int64_t>());
  };
  if (t == "WordPiece") {
    auto m = std::make_unique<WordPieceModel>();
    read_vocab(*m);
    m->unk = j.value("unk_token", std::string("[UNK]"));
    m->prefix = j.value("continuing_subword_prefix", std::string("##"));
    m->max_chars = j.value("max_input_chars_per_word", size_t(100));
    return m;
  }
  if (t == "WordLevel") {
    auto m = std::make_unique<WordLevelModel>();
    read_vocab(*m);
    m->unk = j.value("unk_token", std::string("<unk>"));
    return m;
  }
  if (t == "BPE") {
    auto m = std::make_unique<BpeModel>();
    read_vocab(*m);
    if (j.contains("dropout") && !j["dropout"].is_null() && j["dropout"].get<double>() > 0)
      unsupported("model option", "BPE.dropout (random, cannot be reproduced)");
    m->has_unk = j.contains("unk_token") && !j["unk_token"].is_null();
    if (m->has_unk) m->unk = j["unk_token"].get<std::string>();
    auto str_or_empty = [&](const char* k) {
      return j.contains(k) && !j[k].is_null() ? j[k].get<std::string>() : std::string();
    };
    m->prefix = str_or_empty("continuing_subword_prefix");
    m->suffix = str_or_empty("end_of_word_suffix");
    m->fuse_unk = j.value("fuse_unk", false);
    m->byte_fallback = j.value("byte_fallback", false);
    m->ignore_merges = j.value("ignore_merges", false);
    uint32_t rank = 0;
    for (auto& merge : j.at("merges")) {
      std::string a, b;
      if (merge.is_string()) {
        std::string s = merge.get<std::string>();
        auto sp = s.find(' ');
        if (sp == std::string::npos) throw TokenizerError("tokenizer.json: BPE merge " + merge.dump() + " has no space");
        a = s.substr(0, sp), b = s.substr(sp + 1);
      } else {
        a = merge.at(0).get<std::string>(), b = merge.at(1).get<std::string>();
      }
      auto ia = m->vocab.find(a), ib = m->vocab.find(b);
      std::string merged = a + b.substr(std::min(m->prefix.size(), b.size()));
      auto im = m->vocab.find(merged);
      if (!ia || !ib || !im)
        throw TokenizerError("tokenizer.json: BPE merge " + merge.dump() + " uses a token that is not in the vocab");
      m->merges.emplace(BpeModel::key(*ia, *ib), std::make_pair(rank++, *im));
    }
    return m;
  }
  if (t == "Unigram") {
    auto m = std::make_unique<UnigramModel>();
    int64_t id = 0;
    m->min_score = 1e300;
    for (auto& entry : j.at("vocab")) {
      std::string piece = entry.at(0).get<std::string>();
      double score = entry.at(1).get<double>();
      m->vocab.add(piece, id);
      m->scores.push_back(score);
      m->min_score = std::min(m->min_score, score);
      m->insert(piece, id);
      ++id;
    }
    if (j.contains("unk_id") && !j["unk_id"].is_null()) m->unk_id = j["unk_id"].get<int64_t>();
    m->byte_fallback = j.value("byte_fallback", false);
    return m;
  }
  unsupported("model", t);
}

// ---- post-processors ----

struct Part {  // a special token or one of the sequences, with its type id
  bool special = false;
  std::vector<int64_t> ids;
  int seq = 0;  // 0: A, 1: B
  int64_t type_id = 0;
};

struct PostProcessor {
  std::vector<Part> single, pair;
  bool identity = true;  // ByteLevel: offsets only, ids unchanged
  size_t added(bool is_pair) const {
    size_t n = 0;
    for (auto& p : is_pair ? pair : single)
      if (p.special) n += p.ids.size();
    return n;
  }
};

inline Part special_part(const json& pair_of_token_and_id, int64_t type_id) {
  Part p;
  p.special = true;
  p.ids = {pair_of_token_and_id.at(1).get<int64_t>()};
  p.type_id = type_id;
  return p;
}

inline Part seq_part(int seq, int64_t type_id) {
  Part p;
  p.seq = seq;
  p.type_id = type_id;
  return p;
}

inline void make_post_processor(const json& j, PostProcessor& out) {
  if (j.is_null()) return;
  std::string t = type_of(j, "post_processor");
  if (t == "ByteLevel") return;
  if (t == "BertProcessing") {
    out.identity = false;
    out.single = {special_part(j.at("cls"), 0), seq_part(0, 0), special_part(j.at("sep"), 0)};
    out.pair = {special_part(j.at("cls"), 0), seq_part(0, 0), special_part(j.at("sep"), 0), seq_part(1, 1),
                special_part(j.at("sep"), 1)};
    return;
  }
  if (t == "RobertaProcessing") {
    out.identity = false;
    out.single = {special_part(j.at("cls"), 0), seq_part(0, 0), special_part(j.at("sep"), 0)};
    // RoBERTa has no segment embeddings: every type id is 0, the pair's included.
    out.pair = {special_part(j.at("cls"), 0), seq_part(0, 0), special_part(j.at("sep"), 0),
                special_part(j.at("sep"), 0), seq_part(1, 0), special_part(j.at("sep"), 0)};
    return;
  }
  if (t == "TemplateProcessing") {
    out.identity = false;
    const json& specials = j.at("special_tokens");
    auto parse = [&](const json& pieces) {
      std::vector<Part> parts;
      for (auto& piece : pieces) {
        if (piece.contains("Sequence")) {
          const json& s = piece["Sequence"];
          parts.push_back(seq_part(s.at("id").get<std::string>() == "A" ? 0 : 1, s.value("type_id", int64_t(0))));
        } else {
          const json& s = piece.at("SpecialToken");
          std::string name = s.at("id").get<std::string>();
          if (!specials.contains(name))
            throw TokenizerError("tokenizer.json: TemplateProcessing uses " + json(name).dump() +
                                 " but does not list it in special_tokens");
          Part p;
          p.special = true;
          p.ids = specials[name].at("ids").get<std::vector<int64_t>>();
          p.type_id = s.value("type_id", int64_t(0));
          parts.push_back(p);
        }
      }
      return parts;
    };
    out.single = parse(j.at("single"));
    out.pair = parse(j.at("pair"));
    return;
  }
  if (t == "Sequence") {
    for (auto& item : j.at("processors")) {
      PostProcessor sub;
      make_post_processor(item, sub);
      if (!sub.identity) {
        if (!out.identity) unsupported("post-processor", "Sequence with two processors that add tokens");
        out = sub;
      }
    }
    return;
  }
  unsupported("post-processor", t);
}

// ---- decoders ----

struct Decoder {
  virtual ~Decoder() = default;
  virtual std::vector<std::string> decode_chain(std::vector<std::string> tokens) const = 0;
};

inline void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  for (size_t i = s.find(from); i != std::string::npos; i = s.find(from, i + to.size())) s.replace(i, from.size(), to);
}

inline std::string cleanup_spaces(std::string s) {
  for (auto [a, b] : std::vector<std::pair<const char*, const char*>>{
           {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"}, {" 'm", "'m"},
           {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}})
    replace_all(s, a, b);
  return s;
}

struct WordPieceDecoder : Decoder {
  std::string prefix = "##";
  bool cleanup = true;
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      auto& t = tokens[i];
      if (i != 0) {
        if (t.compare(0, prefix.size(), prefix) == 0)
          t = t.substr(prefix.size());  // the crate replaces the first occurrence; at the start here
        else
          t = " " + t;
      }
      if (cleanup) t = cleanup_spaces(t);
    }
    return tokens;
  }
};

struct ByteLevelDecoder : Decoder {
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    const auto& table = unicode_to_bytes();
    std::string bytes;
    for (auto& t : tokens) {
      std::string part;
      bool ok = true;
      for (char32_t c : to_u32(t)) {
        auto it = table.find(c);
        if (it == table.end()) {
          ok = false;
          break;
        }
        part.push_back(char(it->second));
      }
      bytes += ok ? part : t;
    }
    return {utf8_lossy(bytes)};
  }
};

struct MetaspaceDecoder : Decoder {
  std::string replacement = "\xE2\x96\x81";
  bool prepend = true;
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) replace_all(tokens[i], replacement, i == 0 && prepend ? "" : " ");
    return tokens;
  }
};

struct ReplaceDecoder : Decoder {
  std::unique_ptr<Regex> re;
  std::string content;
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (auto& t : tokens) {
      std::string out;
      size_t last = 0;
      for (auto& [a, b] : re->find_all(t)) {
        out.append(t, last, a - last);
        out += content;
        last = b;
      }
      out.append(t, last, std::string::npos);
      t = out;
    }
    return tokens;
  }
};

struct ByteFallbackDecoder : Decoder {
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t pending = 0;
    auto flush = [&] {
      if (!pending) return;
      bool valid = true;
      try {
        validate_utf8(bytes);
      } catch (const TokenizerError&) {
        valid = false;
      }
      if (valid)
        out.push_back(bytes);
      else
        for (size_t k = 0; k < pending; ++k) out.push_back("\xEF\xBF\xBD");
      bytes.clear();
      pending = 0;
    };
    for (auto& t : tokens) {
      unsigned v = 0;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && std::isxdigit(static_cast<unsigned char>(t[3])) &&
          std::isxdigit(static_cast<unsigned char>(t[4]))) {
        v = unsigned(std::stoul(t.substr(3, 2), nullptr, 16));
        bytes.push_back(char(v));
        ++pending;
      } else {
        flush();
        out.push_back(t);
      }
    }
    flush();
    return out;
  }
};

struct BpeDecoder : Decoder {  // end-of-word suffix -> space (none after the last token)
  std::string suffix = "</w>";
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) replace_all(tokens[i], suffix, i + 1 == tokens.size() ? "" : " ");
    return tokens;
  }
};

struct FuseDecoder : Decoder {
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::string all;
    for (auto& t : tokens) all += t;
    return {all};
  }
};

struct StripDecoder : Decoder {
  char32_t content = ' ';
  size_t start = 0, stop = 0;
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (auto& t : tokens) {
      u32 u = to_u32(t);
      size_t a = 0, b = u.size();
      for (size_t k = 0; k < start && a < b && u[a] == content; ++k) ++a;
      for (size_t k = 0; k < stop && b > a && u[b - 1] == content; ++k) --b;
      t = to_utf8(u.substr(a, b - a));
    }
    return tokens;
  }
};

struct SequenceDecoder : Decoder {
  std::vector<std::unique_ptr<Decoder>> items;
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (auto& d : items) tokens = d->decode_chain(std::move(tokens));
    return tokens;
  }
};

inline std::unique_ptr<Decoder> make_decoder(const json& j) {
  if (j.is_null()) return nullptr;
  std::string t = type_of(j, "decoder");
  if (t == "WordPiece") {
    auto d = std::make_unique<WordPieceDecoder>();
    d->prefix = j.value("prefix", std::string("##"));
    d->cleanup = j.value("cleanup", true);
    return d;
  }
  if (t == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (t == "Metaspace") {
    auto d = std::make_unique<MetaspaceDecoder>();
    d->replacement = j.value("replacement", std::string("\xE2\x96\x81"));
    std::string scheme = j.contains("prepend_scheme") ? j["prepend_scheme"].get<std::string>()
                                                      : (j.value("add_prefix_space", true) ? "always" : "never");
    d->prepend = scheme != "never";
    return d;
  }
  if (t == "Replace") {
    auto d = std::make_unique<ReplaceDecoder>();
    d->re = std::make_unique<Regex>(pattern_of(j.at("pattern"), "Replace"));
    d->content = j.at("content").get<std::string>();
    return d;
  }
  if (t == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (t == "Fuse") return std::make_unique<FuseDecoder>();
  if (t == "BPEDecoder") {
    auto d = std::make_unique<BpeDecoder>();
    d->suffix = j.value("suffix", std::string("</w>"));
    return d;
  }
  if (t == "Strip") {
    auto d = std::make_unique<StripDecoder>();
    d->content = to_u32(j.at("content").get<std::string>()).at(0);
    d->start = j.value("start", size_t(0));
    d->stop = j.value("stop", size_t(0));
    return d;
  }
  if (t == "Sequence") {
    auto d = std::make_unique<SequenceDecoder>();
    for (auto& item : j.at("decoders"))
      if (auto m = make_decoder(item)) d->items.push_back(std::move(m));
    return d;
  }
  unsupported("decoder", t);
}

// ---- added tokens ----

struct AddedToken {
  int64_t id = 0;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// Leftmost-longest matching over a set of strings (the crate uses Aho-Corasick, LeftmostLongest).
class Trie {
 public:
  void insert(const std::string& s, size_t index) {
    if (s.empty()) return;
    int node = 0;
    for (unsigned char b : s) {
      auto& next = nodes_[size_t(node)].next;
      auto it = next.find(b);
      if (it == next.end()) {
        nodes_.emplace_back();
        int child = int(nodes_.size()) - 1;
        nodes_[size_t(node)].next[b] = child;
        node = child;
      } else {
        node = it->second;
      }
    }
    nodes_[size_t(node)].index = long(index);
    empty_ = false;
  }
  bool empty() const { return empty_; }
  // The longest match starting at `at`: (length, index) or (0, -1).
  std::pair<size_t, long> longest(const std::string& s, size_t at) const {
    int node = 0;
    std::pair<size_t, long> best{0, -1};
    for (size_t k = at; k < s.size(); ++k) {
      auto it = nodes_[size_t(node)].next.find(static_cast<unsigned char>(s[k]));
      if (it == nodes_[size_t(node)].next.end()) break;
      node = it->second;
      if (nodes_[size_t(node)].index >= 0) best = {k + 1 - at, nodes_[size_t(node)].index};
    }
    return best;
  }

 private:
  struct Node {
    std::unordered_map<unsigned char, int> next;
    long index = -1;
  };
  std::vector<Node> nodes_{1};
  bool empty_ = true;
};

}  // namespace tok_detail

class Tokenizer {
 public:
  struct Truncation {
    bool enabled = false;
    size_t max_length = 0;
    size_t stride = 0;
    std::string strategy = "LongestFirst";  // OnlyFirst, OnlySecond
    bool left = false;                      // direction "Left"
  };
  struct Padding {
    bool enabled = false;
    size_t fixed = 0;  // 0: pad to the longest of the batch
    bool left = false;
    size_t multiple_of = 0;
    int64_t pad_id = 0, pad_type_id = 0;
    std::string pad_token = "[PAD]";
  };

  Truncation truncation;
  Padding padding;

  static Tokenizer from_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw TokenizerError("cannot read " + path + "; pass the artifact's tokenizer.json");
    std::stringstream ss;
    ss << in.rdbuf();
    try {
      return from_json(ss.str());
    } catch (const TokenizerError& e) {
      throw TokenizerError(path + ": " + e.what());
    }
  }

  static Tokenizer from_json(const std::string& text) {
    tok_detail::json j;
    try {
      j = tok_detail::json::parse(text);
    } catch (const std::exception& e) {
      throw TokenizerError(std::string("tokenizer.json is not valid JSON: ") + e.what());
    }
    Tokenizer t;
    try {
      t.load(j);
    } catch (const TokenizerError&) {
      throw;
    } catch (const std::exception& e) {
      throw TokenizerError(std::string("tokenizer.json has an unexpected layout: ") + e.what());
    }
    return t;
  }

  // Encodes one text, or a pair when `pair` is given; truncation and padding as tokenizer.json sets
  // them (change `truncation` / `padding` to override). Throws TokenizerError for invalid UTF-8.
  Encoding encode(const std::string& text, const std::string* pair = nullptr, bool add_special_tokens = true) const {
    Encoding e = encode_unpadded(text, pair, add_special_tokens);
    if (padding.enabled) pad(e, padding.fixed ? padding.fixed : e.ids.size());
    return e;
  }
  Encoding encode(const std::string& text, const std::string& pair, bool add_special_tokens = true) const {
    return encode(text, &pair, add_special_tokens);
  }

  // Encodes texts (or pairs when `pairs` is non-empty, one per text), padded to a common length:
  // the longest row, or padding's fixed length when tokenizer.json fixes one, or `pad_to` if non-zero.
  std::vector<Encoding> encode_batch(const std::vector<std::string>& texts,
                                     const std::vector<std::string>& pairs = {}, bool add_special_tokens = true,
                                     size_t pad_to = 0) const {
    if (!pairs.empty() && pairs.size() != texts.size())
      throw TokenizerError("encode_batch got " + std::to_string(texts.size()) + " texts but " +
                           std::to_string(pairs.size()) + " pairs; pass one pair per text or none");
    std::vector<Encoding> out;
    out.reserve(texts.size());
    size_t longest = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      out.push_back(encode_unpadded(texts[i], pairs.empty() ? nullptr : &pairs[i], add_special_tokens));
      longest = std::max(longest, out.back().ids.size());
    }
    size_t target = pad_to ? pad_to : padding.enabled && padding.fixed ? padding.fixed : longest;
    for (auto& e : out) pad(e, target);
    return out;
  }

  // ids -> text through the decoder (skipping special tokens unless asked not to).
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = true) const {
    std::vector<std::string> tokens;
    for (int64_t id : ids) {
      auto it = added_by_id_.find(id);
      if (it != added_by_id_.end()) {
        if (skip_special_tokens && added_[it->second].special) continue;
        tokens.push_back(added_[it->second].content);
      } else if (id >= 0 && size_t(id) < model_->vocab.id_to_token.size()) {
        tokens.push_back(model_->vocab.id_to_token[size_t(id)]);
      }
    }
    if (decoder_) tokens = decoder_->decode_chain(std::move(tokens));
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i && !decoder_) out += ' ';
      out += tokens[i];
    }
    return out;
  }

  // The id of a token (added tokens first, then the model's vocab), or -1.
  int64_t token_to_id(const std::string& token) const {
    for (auto& a : added_)
      if (a.content == token) return a.id;
    auto id = model_->vocab.find(token);
    return id ? *id : -1;
  }

  std::string id_to_token(int64_t id) const {
    auto it = added_by_id_.find(id);
    if (it != added_by_id_.end()) return added_[it->second].content;
    if (id >= 0 && size_t(id) < model_->vocab.id_to_token.size()) return model_->vocab.id_to_token[size_t(id)];
    return "";
  }

  // Special tokens the post-processor adds to one text (is_pair=false) or a pair.
  size_t num_special_tokens_to_add(bool is_pair) const { return post_.added(is_pair); }

 private:
  std::unique_ptr<tok_detail::Normalizer> normalizer_;
  std::unique_ptr<tok_detail::PreTokenizer> pre_tokenizer_;
  std::shared_ptr<tok_detail::Model> model_;
  std::unique_ptr<tok_detail::Decoder> decoder_;
  tok_detail::PostProcessor post_;
  std::vector<tok_detail::AddedToken> added_;
  std::unordered_map<int64_t, size_t> added_by_id_;
  tok_detail::Trie raw_trie_, normalized_trie_;

  void load(const tok_detail::json& j) {
    using namespace tok_detail;
    if (!j.is_object() || !j.contains("model")) throw TokenizerError("tokenizer.json has no \"model\"");
    normalizer_ = make_normalizer(j.value("normalizer", json()));
    pre_tokenizer_ = make_pre_tokenizer(j.value("pre_tokenizer", json()));
    model_ = make_model(j["model"]);
    make_post_processor(j.value("post_processor", json()), post_);
    decoder_ = make_decoder(j.value("decoder", json()));
    const json& tr = j.value("truncation", json());
    if (!tr.is_null()) {
      truncation.enabled = true;
      truncation.max_length = tr.at("max_length").get<size_t>();
      truncation.stride = tr.value("stride", size_t(0));
      truncation.strategy = tr.value("strategy", std::string("LongestFirst"));
      truncation.left = tr.value("direction", std::string("Right")) == "Left";
    }
    const json& pd = j.value("padding", json());
    if (!pd.is_null()) {
      padding.enabled = true;
      const json& st = pd.value("strategy", json("BatchLongest"));
      if (st.is_object() && st.contains("Fixed")) padding.fixed = st["Fixed"].get<size_t>();
      padding.left = pd.value("direction", std::string("Right")) == "Left";
      if (pd.contains("pad_to_multiple_of") && !pd["pad_to_multiple_of"].is_null())
        padding.multiple_of = pd["pad_to_multiple_of"].get<size_t>();
      padding.pad_id = pd.value("pad_id", int64_t(0));
      padding.pad_type_id = pd.value("pad_type_id", int64_t(0));
      padding.pad_token = pd.value("pad_token", std::string("[PAD]"));
    }
    for (auto& a : j.value("added_tokens", json::array())) {
      AddedToken t;
      t.id = a.at("id").get<int64_t>();
      t.content = a.at("content").get<std::string>();
      t.single_word = a.value("single_word", false);
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      t.normalized = a.value("normalized", false);
      t.special = a.value("special", false);
      added_by_id_[t.id] = added_.size();
      added_.push_back(t);
    }
    for (size_t i = 0; i < added_.size(); ++i) {
      if (added_[i].normalized)
        normalized_trie_.insert(normalizer_ ? normalizer_->normalize(added_[i].content) : added_[i].content, i);
      else
        raw_trie_.insert(added_[i].content, i);
    }
  }

  struct Split {
    std::string text;
    long added = -1;  // index into added_, or -1 for text still to tokenize
    bool at_start = false;
  };

  // AddedVocabulary::find_matches: splits around the added tokens (single_word, lstrip, rstrip).
  std::vector<Split> find_matches(const std::string& s, const tok_detail::Trie& trie, bool at_start) const {
    using namespace tok_detail;
    std::vector<Split> out;
    if (trie.empty() || s.empty()) {
      out.push_back(Split{s, -1, at_start});
      return out;
    }
    size_t start_offset = 0, i = 0;
    while (i < s.size()) {
      auto [len, index] = trie.longest(s, i);
      if (index < 0) {
        ++i;
        continue;
      }
      size_t start = i, stop = i + len;
      const AddedToken& tok = added_[size_t(index)];
      if (tok.single_word) {
        bool start_space = start == 0 || !ends_with_word(s.substr(0, start));
        bool stop_space = stop == s.size() || !starts_with_word(s.substr(stop));
        if (!start_space || !stop_space) {
          ++i;  // (the automaton then resumes after this match's first byte, as find_iter would not; rare)
          continue;
        }
      }
      if (tok.lstrip) {
        u32 before = to_u32(s.substr(start_offset, start - start_offset));
        size_t k = before.size();
        while (k > 0 && is_whitespace(before[k - 1])) --k;
        start = start_offset + to_utf8(before.substr(0, k)).size();
      }
      if (tok.rstrip) {
        u32 after = to_u32(s.substr(stop));
        size_t k = 0;
        while (k < after.size() && is_whitespace(after[k])) ++k;
        stop += to_utf8(after.substr(0, k)).size();
      }
      if (start_offset < start) out.push_back(Split{s.substr(start_offset, start - start_offset), -1, at_start && start_offset == 0});
      out.push_back(Split{s.substr(start, stop - start), index, false});
      start_offset = stop;
      i = stop;
    }
    if (start_offset != s.size()) out.push_back(Split{s.substr(start_offset), -1, at_start && start_offset == 0});
    return out;
  }

  static bool ends_with_word(const std::string& s) {
    auto u = tok_detail::to_u32(s);
    return !u.empty() && tok_detail::is_word_char(u.back());
  }
  static bool starts_with_word(const std::string& s) {
    auto u = tok_detail::to_u32(s);
    return !u.empty() && tok_detail::is_word_char(u.front());
  }

  // One sequence -> (ids, tokens, is-special flags), before the post-processor.
  void encode_sequence(const std::string& text, std::vector<int64_t>& ids) const {
    using namespace tok_detail;
    validate_utf8(text);
    std::vector<Split> splits;
    for (auto& raw : find_matches(text, raw_trie_, true)) {
      if (raw.added >= 0) {
        splits.push_back(raw);
        continue;
      }
      std::string normalized = normalizer_ ? normalizer_->normalize(raw.text) : raw.text;
      for (auto& s : find_matches(normalized, normalized_trie_, raw.at_start)) splits.push_back(std::move(s));
    }
    std::vector<Piece> pieces;
    for (auto& s : splits) {
      if (s.added >= 0) {
        ids.push_back(added_[size_t(s.added)].id);
        continue;
      }
      if (s.text.empty()) continue;
      pieces.clear();
      if (pre_tokenizer_)
        pre_tokenizer_->split(Piece{s.text, s.at_start}, pieces);
      else
        pieces.push_back(Piece{s.text, s.at_start});
      for (auto& p : pieces) model_->tokenize(p.text, ids);
    }
  }

  static void truncate(std::vector<int64_t>& ids, size_t n, bool left) {
    if (ids.size() <= n) return;
    if (left)
      ids.erase(ids.begin(), ids.end() - long(n));
    else
      ids.resize(n);
  }

  Encoding encode_unpadded(const std::string& text, const std::string* pair, bool add_special_tokens) const {
    std::vector<int64_t> a, b;
    encode_sequence(text, a);
    if (pair) encode_sequence(*pair, b);
    bool is_pair = pair != nullptr;
    if (truncation.enabled) {
      size_t n_added = add_special_tokens ? post_.added(is_pair) : 0;
      if (truncation.max_length < n_added)
        throw TokenizerError("truncation max_length " + std::to_string(truncation.max_length) + " is below the " +
                             std::to_string(n_added) + " special tokens added; raise it");
      size_t max_len = truncation.max_length - n_added;
      size_t total = a.size() + b.size();
      if (total > max_len) {
        if (!is_pair || truncation.strategy == "OnlyFirst" || truncation.strategy == "OnlySecond") {
          auto& target = !is_pair || truncation.strategy == "OnlyFirst" ? a : b;
          size_t to_remove = total - max_len;
          if (target.size() <= to_remove && is_pair)
            throw TokenizerError("Truncation error: Sequence to truncate too short to respect the provided max_length");
          truncate(target, target.size() > to_remove ? target.size() - to_remove : 0, truncation.left);
        } else {
          size_t n1 = a.size(), n2 = b.size();
          bool swap = n1 > n2;
          if (swap) std::swap(n1, n2);
          if (n1 > max_len)
            n2 = n1;
          else
            n2 = std::max(n1, max_len - n1);
          if (n1 + n2 > max_len) {
            n1 = max_len / 2;
            n2 = n1 + max_len % 2;
          }
          if (swap) std::swap(n1, n2);
          truncate(a, n1, truncation.left);
          truncate(b, n2, truncation.left);
        }
      }
    }
    Encoding e;
    auto add_seq = [&](const std::vector<int64_t>& ids, int64_t type_id) {
      for (int64_t id : ids) {
        e.ids.push_back(id);
        e.type_ids.push_back(type_id);
        e.special_tokens_mask.push_back(0);
      }
    };
    if (!add_special_tokens || post_.identity) {
      add_seq(a, 0);
      if (is_pair) add_seq(b, 1);
    } else {
      for (auto& part : is_pair ? post_.pair : post_.single) {
        if (part.special) {
          for (int64_t id : part.ids) {
            e.ids.push_back(id);
            e.type_ids.push_back(part.type_id);
            e.special_tokens_mask.push_back(1);
          }
        } else {
          add_seq(part.seq == 0 ? a : b, part.type_id);
        }
      }
    }
    e.attention_mask.assign(e.ids.size(), 1);
    return e;
  }

  void pad(Encoding& e, size_t target) const {
    if (padding.multiple_of && target % padding.multiple_of) target += padding.multiple_of - target % padding.multiple_of;
    if (e.ids.size() >= target) return;
    size_t n = target - e.ids.size();
    auto ins = [&](std::vector<int64_t>& v, int64_t value) {
      v.insert(padding.left ? v.begin() : v.end(), n, value);
    };
    ins(e.ids, padding.pad_id);
    ins(e.type_ids, padding.pad_type_id);
    ins(e.attention_mask, 0);
    ins(e.special_tokens_mask, 1);
  }
};

}  // namespace hf_torchscript
