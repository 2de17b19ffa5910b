// Pattern compilation (recursive descent to a syntax tree, bounded by the nesting limit; then
// Thompson's construction) and the Pike VM that runs the automaton over a subject.
#include "core/pattern.h"

#include <algorithm>
#include <cctype>
#include <vector>

namespace gpusleep {
namespace {

struct Node {
  enum Kind { kEmpty, kByte, kAny, kClass, kBegin, kEnd, kConcat, kAlternate, kRepeat };
  explicit Node(Kind k) : kind(k) {}
  Kind kind = kEmpty;
  unsigned char byte = 0;
  std::uint32_t cls = 0;
  int min = 0, max = 0;  // kRepeat; max < 0: no upper bound
  std::vector<std::size_t> children;
};

class Failure {
 public:
  explicit Failure(std::string message) : message(std::move(message)) {}
  std::string message;
};

std::bitset<256> class_of(char letter) {
  std::bitset<256> set;
  for (int c = 0; c < 256; ++c) {
    const bool in = (letter == 'd' || letter == 'D')   ? std::isdigit(c) != 0
                    : (letter == 'w' || letter == 'W') ? (std::isalnum(c) != 0 || c == '_')
                                                       : (c == ' ' || (c >= '\t' && c <= '\r'));
    set[static_cast<std::size_t>(c)] = in;
  }
  if (std::isupper(static_cast<unsigned char>(letter))) set.flip();
  return set;
}

}  // namespace

class PatternCompiler {
 public:
  explicit PatternCompiler(std::string_view text) : text_(text) {}

  std::optional<Pattern> run(std::string* error) {
    try {
      if (text_.size() > Pattern::kMaxLength) {
        throw Failure("longer than " + std::to_string(Pattern::kMaxLength) + " characters");
      }
      const std::size_t root = alternation(0);
      if (pos_ < text_.size()) fail("unbalanced ')'");
      emit(root);
      push({Pattern::Instruction::kMatch});
      Pattern p;
      p.text_ = std::string(text_);
      p.program_ = std::move(program_);
      p.classes_ = std::move(classes_);
      return p;
    } catch (const Failure& f) {
      *error = f.message;
      return std::nullopt;
    }
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw Failure("at offset " + std::to_string(pos_) + ": " + why);
  }
  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return text_[pos_]; }

  std::size_t add(Node n) {
    nodes_.push_back(std::move(n));
    return nodes_.size() - 1;
  }
  std::uint32_t add_class(const std::bitset<256>& set) {
    classes_.push_back(set);
    return static_cast<std::uint32_t>(classes_.size() - 1);
  }

  std::size_t alternation(int depth) {
    Node alt{Node::kAlternate};
    alt.children.push_back(concatenation(depth));
    while (!at_end() && peek() == '|') {
      ++pos_;
      alt.children.push_back(concatenation(depth));
    }
    return alt.children.size() == 1 ? alt.children[0] : add(std::move(alt));
  }

  std::size_t concatenation(int depth) {
    Node cat{Node::kConcat};
    while (!at_end() && peek() != '|' && peek() != ')')
      cat.children.push_back(repetition(depth));
    if (cat.children.empty()) return add(Node{Node::kEmpty});
    return cat.children.size() == 1 ? cat.children[0] : add(std::move(cat));
  }

  std::size_t repetition(int depth) {
    std::size_t node = atom(depth);
    bool quantified = false;
    while (!at_end() && (peek() == '*' || peek() == '+' || peek() == '?' || peek() == '{')) {
      if (quantified) {
        fail(
            "a quantifier cannot follow a quantifier (lazy and possessive forms are not "
            "supported)");
      }
      const Node::Kind kind = nodes_[node].kind;
      if (kind == Node::kBegin || kind == Node::kEnd) fail("an anchor cannot be repeated");
      Node rep{Node::kRepeat};
      rep.children.push_back(node);
      const char q = peek();
      ++pos_;
      if (q == '*') {
        rep.min = 0, rep.max = -1;
      } else if (q == '+') {
        rep.min = 1, rep.max = -1;
      } else if (q == '?') {
        rep.min = 0, rep.max = 1;
      } else {
        bounds(&rep.min, &rep.max);
      }
      node = add(std::move(rep));
      quantified = true;
    }
    return node;
  }

  int number() {
    if (at_end() || !std::isdigit(static_cast<unsigned char>(peek()))) {
      fail("expected a number in {m,n}");
    }
    int n = 0;
    while (!at_end() && std::isdigit(static_cast<unsigned char>(peek()))) {
      n = n * 10 + (peek() - '0');
      ++pos_;
      if (n > Pattern::kMaxRepeat) {
        fail("a repetition bound above " + std::to_string(Pattern::kMaxRepeat));
      }
    }
    return n;
  }

  void bounds(int* min, int* max) {
    *min = number();
    *max = *min;
    if (!at_end() && peek() == ',') {
      ++pos_;
      *max = !at_end() && peek() == '}' ? -1 : number();
    }
    if (at_end() || peek() != '}') fail("expected '}' to close {m,n}");
    ++pos_;
    if (*max >= 0 && *max < *min) fail("{m,n} with n below m");
  }

  std::size_t atom(int depth) {
    const char c = peek();
    switch (c) {
      case '(': {
        if (depth + 1 > Pattern::kMaxNesting) {
          fail("groups nested deeper than " + std::to_string(Pattern::kMaxNesting));
        }
        ++pos_;
        if (!at_end() && peek() == '?') {
          if (pos_ + 1 < text_.size() && text_[pos_ + 1] == ':') {
            pos_ += 2;
          } else {
            fail("(?...) is not supported (lookaround, named groups, flags); use (...) or (?:...)");
          }
        }
        const std::size_t inner = alternation(depth + 1);
        if (at_end() || peek() != ')') fail("missing ')'");
        ++pos_;
        return inner;
      }
      case '*':
      case '+':
      case '?':
      case '{':
        fail(std::string("nothing to repeat before '") + c + "'");
      case '.':
        ++pos_;
        return add(Node{Node::kAny});
      case '^':
        ++pos_;
        return add(Node{Node::kBegin});
      case '$':
        ++pos_;
        return add(Node{Node::kEnd});
      case '[':
        return bracket();
      case '\\': {
        std::bitset<256> set;
        unsigned char byte = 0;
        if (escape(false, &set, &byte)) {
          Node n{Node::kClass};
          n.cls = add_class(set);
          return add(std::move(n));
        }
        Node n{Node::kByte};
        n.byte = byte;
        return add(std::move(n));
      }
      default: {
        ++pos_;
        Node n{Node::kByte};
        n.byte = static_cast<unsigned char>(c);
        return add(std::move(n));
      }
    }
  }

  // After a backslash: returns true with *set for a class escape, false with *byte for one byte.
  bool escape(bool in_bracket, std::bitset<256>* set, unsigned char* byte) {
    ++pos_;
    if (at_end()) fail("a trailing backslash");
    const char c = peek();
    ++pos_;
    switch (c) {
      case 'd':
      case 'D':
      case 'w':
      case 'W':
      case 's':
      case 'S':
        *set = class_of(c);
        return true;
      case 't':
        *byte = '\t';
        return false;
      case 'n':
        *byte = '\n';
        return false;
      case 'r':
        *byte = '\r';
        return false;
      case 'b':
      case 'B':
        --pos_;
        fail(in_bracket ? "\\b inside [...] is not supported"
                        : "word boundaries are not supported");
      default:
        break;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      --pos_;
      fail("backreferences are not supported");
    }
    if (std::isalpha(static_cast<unsigned char>(c))) {
      --pos_;
      fail(std::string("unknown escape \\") + c);
    }
    *byte = static_cast<unsigned char>(c);
    return false;
  }

  std::size_t bracket() {
    const std::size_t open = pos_;
    ++pos_;
    bool negate = false;
    if (!at_end() && peek() == '^') {
      negate = true;
      ++pos_;
    }
    std::bitset<256> set;
    bool first = true;
    for (;;) {
      if (at_end()) {
        pos_ = open;
        fail("missing ']'");
      }
      char c = peek();
      if (c == ']' && !first) break;
      first = false;
      if (c == '[' && pos_ + 1 < text_.size() &&
          (text_[pos_ + 1] == ':' || text_[pos_ + 1] == '=' || text_[pos_ + 1] == '.')) {
        fail("[:class:], [=x=] and [.x.] are not supported; use ranges or \\d \\w \\s");
      }
      unsigned char lo = 0;
      if (c == '\\') {
        std::bitset<256> escaped;
        if (escape(true, &escaped, &lo)) {
          set |= escaped;
          continue;
        }
      } else {
        lo = static_cast<unsigned char>(c);
        ++pos_;
      }
      if (pos_ + 1 < text_.size() && peek() == '-' && text_[pos_ + 1] != ']') {
        ++pos_;
        unsigned char hi = 0;
        if (peek() == '\\') {
          std::bitset<256> escaped;
          if (escape(true, &escaped, &hi)) fail("a class escape cannot end a range");
        } else {
          hi = static_cast<unsigned char>(peek());
          ++pos_;
        }
        if (hi < lo) fail("a range whose end is below its start");
        for (int b = lo; b <= hi; ++b)
          set[static_cast<std::size_t>(b)] = true;
      } else {
        set[lo] = true;
      }
    }
    ++pos_;
    if (negate) set.flip();
    Node n{Node::kClass};
    n.cls = add_class(set);
    return add(std::move(n));
  }

  std::uint32_t here() const { return static_cast<std::uint32_t>(program_.size()); }

  std::uint32_t push(Pattern::Instruction in) {
    if (program_.size() >= Pattern::kMaxStates) {
      throw Failure("too complex: more than " + std::to_string(Pattern::kMaxStates) +
                    " states (large {m,n} bounds or many alternatives)");
    }
    program_.push_back(in);
    return here() - 1;
  }

  // Thompson's construction. The tree is at most kMaxNesting groups deep (plus one level per
  // concatenation, alternation and quantifier), so this recursion is bounded by the pattern.
  void emit(std::size_t index) {
    using In = Pattern::Instruction;
    const Node& n = nodes_[index];
    switch (n.kind) {
      case Node::kEmpty:
        return;
      case Node::kByte:
        push({In::kByte, n.byte});
        return;
      case Node::kAny:
        push({In::kAny});
        return;
      case Node::kClass:
        push({In::kClass, 0, n.cls});
        return;
      case Node::kBegin:
        push({In::kBegin});
        return;
      case Node::kEnd:
        push({In::kEnd});
        return;
      case Node::kConcat:
        for (std::size_t child : n.children)
          emit(child);
        return;
      case Node::kAlternate: {
        std::vector<std::uint32_t> jumps;
        for (std::size_t i = 0; i + 1 < n.children.size(); ++i) {
          const std::uint32_t split = push({In::kSplit});
          program_[split].x = here();
          emit(n.children[i]);
          jumps.push_back(push({In::kJump}));
          program_[split].y = here();
        }
        emit(n.children.back());
        for (std::uint32_t j : jumps)
          program_[j].x = here();
        return;
      }
      case Node::kRepeat: {
        const std::size_t child = n.children[0];
        for (int i = 0; i < n.min; ++i)
          emit(child);
        if (n.max < 0) {
          const std::uint32_t split = push({In::kSplit});
          program_[split].x = here();
          emit(child);
          push({In::kJump, 0, split});
          program_[split].y = here();
          return;
        }
        std::vector<std::uint32_t> splits;
        for (int i = n.min; i < n.max; ++i) {
          splits.push_back(push({In::kSplit}));
          program_[splits.back()].x = here();
          emit(child);
        }
        for (std::uint32_t s : splits)
          program_[s].y = here();
        return;
      }
    }
  }

  std::string_view text_;
  std::size_t pos_ = 0;
  std::vector<Node> nodes_;
  std::vector<Pattern::Instruction> program_;
  std::vector<std::bitset<256>> classes_;
};

std::optional<Pattern> Pattern::compile(std::string_view text, std::string* error) {
  return PatternCompiler(text).run(error);
}

namespace {

// A list of states with room for all it can hold (fixed when it is made): no allocation while
// matching.
struct StateList {
  std::uint32_t* data;
  std::size_t size = 0;
  void push(std::uint32_t pc) { data[size++] = pc; }
  void clear() { size = 0; }
  bool empty() const { return size == 0; }
};

// Patterns of at most this many states match in buffers on the stack (about 3 KiB); larger ones
// allocate theirs once per search.
constexpr std::size_t kInlineStates = 128;

}  // namespace

bool Pattern::search(std::string_view subject) const {
  // Two thread lists (states alive before and after the current byte), marked with the position
  // they belong to so each state enters a list at most once per position; the stack of states
  // to visit holds at most two pushes per visited state, plus the start.
  const std::size_t n = program_.size();
  if (n == 0) return false;  // a moved-from pattern
  std::uint32_t inline_lists[2][kInlineStates];
  std::uint32_t inline_stack[2 * kInlineStates + 1];
  std::size_t inline_mark[kInlineStates];
  std::vector<std::uint32_t> heap;
  std::vector<std::size_t> heap_mark;
  std::uint32_t* list_data[2] = {inline_lists[0], inline_lists[1]};
  std::uint32_t* stack = inline_stack;
  std::size_t* mark = inline_mark;
  if (n > kInlineStates) {
    heap.resize(4 * n + 1);
    heap_mark.resize(n);
    list_data[0] = heap.data();
    list_data[1] = heap.data() + n;
    stack = heap.data() + 2 * n;
    mark = heap_mark.data();
  }
  std::fill(mark, mark + n, static_cast<std::size_t>(-1));
  std::size_t depth = 0;
  const std::size_t len = subject.size();

  // Adds `start` and every state reachable from it without consuming a byte, at position `at`.
  auto add = [&](StateList& list, std::uint32_t start, std::size_t at) {
    stack[depth++] = start;
    while (depth > 0) {
      const std::uint32_t pc = stack[--depth];
      if (mark[pc] == at) continue;
      mark[pc] = at;
      const Instruction& in = program_[pc];
      switch (in.op) {
        case Instruction::kJump:
          stack[depth++] = in.x;
          break;
        case Instruction::kSplit:
          stack[depth++] = in.y;
          stack[depth++] = in.x;
          break;
        case Instruction::kBegin:
          if (at == 0) stack[depth++] = pc + 1;
          break;
        case Instruction::kEnd:
          if (at == len) stack[depth++] = pc + 1;
          break;
        case Instruction::kMatch:
          list.push(pc);
          depth = 0;
          return true;
        default:
          list.push(pc);
          break;
      }
    }
    return false;
  };

  const bool anchored = !program_.empty() && program_[0].op == Instruction::kBegin;
  StateList lists[2] = {{list_data[0]}, {list_data[1]}};
  StateList* current = &lists[0];
  StateList* next = &lists[1];
  for (std::size_t at = 0;; ++at) {
    if ((at == 0 || !anchored) && add(*current, 0, at)) return true;
    if (at == len || (anchored && current->empty())) return false;
    const auto byte = static_cast<unsigned char>(subject[at]);
    next->clear();
    for (std::size_t i = 0; i < current->size; ++i) {
      const std::uint32_t pc = current->data[i];
      const Instruction& in = program_[pc];
      const bool step = in.op == Instruction::kAny ||
                        (in.op == Instruction::kByte && in.byte == byte) ||
                        (in.op == Instruction::kClass && classes_[in.x][byte]);
      if (step && add(*next, pc + 1, at + 1)) return true;
    }
    std::swap(current, next);
  }
}

}  // namespace gpusleep
