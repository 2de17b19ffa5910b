"""The shipped presets held against the source of the releases they claim: every call site a
preset claims (control/presets/manifests/sites.json) exists in each release it names (the
manifests, written by scripts/preset_manifest.py from the published wheels), the preset tags a
stack through it as claimed, every rule matches something some supported release has, and all
presets loaded together (nccl, the servers' in any order, pytorch) tag each server's stacks as its
own preset does alone. The rules are evaluated here as the library evaluates them (first match
wins; a Python matcher matches when some frame matches every pattern it gives)."""
import glob
import itertools
import json
import os
import re
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PRESETS = os.path.join(HERE, "..", "..", "control", "presets")
MANIFESTS = os.path.join(PRESETS, "manifests")
SERVERS = ("sglang", "transformers", "vllm")
# A frame every PyTorch program has below the framework's own; no rule may depend on it.
TORCH_FRAMES = [("torch.nn.modules.module", "Module._call_impl"), ("threading", "Thread.run")]


def load_json(path):
    with open(path) as f:
        return json.load(f)


def preset(name):
    return load_json(os.path.join(PRESETS, name + ".json"))["rules"]


def manifests(package):
    """{version: {module: set(qualnames)}} for every manifest of the package."""
    out = {}
    for path in sorted(glob.glob(os.path.join(MANIFESTS, f"{package}-*.json"))):
        m = load_json(path)
        out[m["version"]] = {mod: set(names) for mod, names in m["modules"].items()}
    return out


def frame_matches(matcher, frame):
    module, qualname = frame
    for field, value in (("module", module), ("qualname", qualname)):
        if field in matcher and not re.search(matcher[field], value):
            return False
    return "file" not in matcher


def rule_matches(rule, frames, capturing=False):
    match = rule.get("match", {})
    if set(match) - {"python", "capturing"}:
        return False  # native frames, sizes, devices: no such facts in these stacks
    if "capturing" in match and match["capturing"] != capturing:
        return False
    python = match.get("python", [])
    matchers = python if isinstance(python, list) else [python]
    return all(any(frame_matches(m, f) for f in frames) for m in matchers)


def decide(rules, frames, capturing=False):
    """(tag or "passthrough" or None, rule name) of the first rule that matches."""
    for i, rule in enumerate(rules):
        if rule_matches(rule, frames, capturing):
            return ("passthrough" if rule.get("passthrough") else rule["tag"],
                    rule.get("name", f"rule {i + 1}"))
    return None, None


def split_site(site):
    module, qualname = site.split(":", 1)
    return module, qualname


def stack(site):
    return [split_site(site)] + TORCH_FRAMES


def claims():
    """(package, claim) for every site claimed; a claim has site, tag, releases, capturing."""
    data = load_json(os.path.join(MANIFESTS, "sites.json"))
    for package, entries in data.items():
        if package == "comment":
            continue
        for claim in entries:
            yield package, claim


def union_rules(server_order):
    rules = preset("nccl")
    for name in server_order:
        rules = rules + preset(name)
    return rules + preset("pytorch")


class Presets(unittest.TestCase):
    def test_every_claimed_site_exists_in_the_releases_it_names(self):
        for package, claim in claims():
            releases = manifests(package)
            names = claim.get("releases") or sorted(releases)
            module, qualname = split_site(claim["site"])
            for version in names:
                self.assertIn(version, releases, f"{package} {version}: no manifest")
                self.assertIn(qualname, releases[version].get(module, set()),
                              f"{package} {version} lacks {claim['site']} (claimed for {claim['tag']})")

    def test_each_preset_tags_the_sites_it_claims(self):
        for package, claim in claims():
            got, rule = decide(preset(package), stack(claim["site"]), claim.get("capturing", False))
            self.assertEqual(got, claim["tag"], f"{package} preset: {claim['site']} -> {got} ({rule})")

    def test_every_release_has_a_claimed_site_for_each_tag(self):
        wanted = {"vllm": {"kv_cache", "weights", "cuda_graph", "passthrough"},
                  "sglang": {"kv_cache", "weights", "cuda_graph", "passthrough"},
                  "transformers": {"kv_cache", "weights", "cuda_graph"}}
        for package in SERVERS:
            for version, modules in manifests(package).items():
                present = set()
                for p, claim in claims():
                    module, qualname = split_site(claim["site"])
                    if p == package and qualname in modules.get(module, set()):
                        present.add(claim["tag"])
                self.assertEqual(wanted[package] - present, set(),
                                 f"{package} {version}: no claimed site for these tags")

    def test_every_rule_of_a_server_preset_matches_what_a_supported_release_has(self):
        for package in SERVERS:
            sites = [(m, q) for modules in manifests(package).values()
                     for m, names in modules.items() for q in names]
            for rule in preset(package):
                python = rule.get("match", {}).get("python", [])
                for matcher in python if isinstance(python, list) else [python]:
                    if not matcher["module"].startswith(f"^{package}\\."):
                        continue  # a matcher on torch's own frames
                    self.assertTrue(any(frame_matches(matcher, s) for s in sites),
                                    f"{package} rule {rule['name']!r}: {matcher} matches no "
                                    "function of a supported release")

    def test_every_rule_of_a_server_preset_needs_a_frame_of_its_own_framework(self):
        for package in SERVERS:
            for rule in preset(package):
                python = rule.get("match", {}).get("python", [])
                matchers = python if isinstance(python, list) else [python]
                own = [m for m in matchers if m.get("module", "").startswith(f"^{package}\\.")]
                self.assertTrue(own, f"{package} rule {rule['name']!r} matches other programs")
                for other in SERVERS + ("torch", "myserver"):
                    if other != package:
                        self.assertFalse(any(re.search(m["module"], other + ".x") for m in own))

    def test_all_presets_loaded_together_in_any_order_tag_each_framework_as_its_own_does(self):
        for order in itertools.permutations(SERVERS):
            rules = union_rules(order)
            for package, claim in claims():
                got, rule = decide(rules, stack(claim["site"]), claim.get("capturing", False))
                self.assertEqual(got, claim["tag"], f"order {order}: {claim['site']} -> {got} ({rule})")

    def test_loaded_together_a_plain_pytorch_program_gets_the_pytorch_tags(self):
        rules = union_rules(SERVERS)
        self.assertEqual(decide(rules, [("torch.nn.modules.linear", "Linear.__init__"),
                                        ("__main__", "main")])[0], "weights")
        self.assertEqual(decide(rules, [("__main__", "step")], capturing=True)[0], "cuda_graph")
        self.assertEqual(decide(rules, [("__main__", "step")])[0], None)

    def test_the_rules_evaluated_here_follow_first_match_and_frame_semantics(self):
        rules = [{"name": "a", "match": {"python": {"module": "^m$", "qualname": "^f$"}}, "tag": "x"},
                 {"name": "b", "match": {"python": [{"module": "^m$"}, {"qualname": "^g$"}]},
                  "tag": "y"},
                 {"name": "c", "match": {"capturing": True}, "tag": "z"}]
        self.assertEqual(decide(rules, [("m", "g"), ("n", "f")]), ("y", "b"))  # same frame for a
        self.assertEqual(decide(rules, [("m", "f")]), ("x", "a"))
        self.assertEqual(decide(rules, [("n", "h")], capturing=True), ("z", "c"))
        self.assertEqual(decide(rules, [("n", "h")]), (None, None))


if __name__ == "__main__":
    unittest.main(verbosity=2)
