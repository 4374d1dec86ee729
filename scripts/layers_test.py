#!/usr/bin/env python3
"""Tests of scripts/layers.py on small crates written to a temporary folder: what makes an edge
(use, inline path, use group, super), what does not (comments, strings, test code), circles
found, and the folder map of ARCHITECTURE.md enforced."""

import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "layers.py")


def run(files, arch=None):
    """Writes `files` (path -> text) under a new root, runs the check on crate `c`."""
    with tempfile.TemporaryDirectory() as root:
        for path, text in files.items():
            full = os.path.join(root, "c", "src", path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w") as f:
                f.write(textwrap.dedent(text))
        if arch is not None:
            with open(os.path.join(root, "ARCHITECTURE.md"), "w") as f:
                f.write(textwrap.dedent(arch))
        out = subprocess.run(
            [sys.executable, SCRIPT, "--root", root, "--crates", "c", "--graph"],
            capture_output=True, text=True, check=False,
        )
        return out.returncode, out.stdout


LIB = "mod a;\nmod b;\n"


class Layers(unittest.TestCase):
    def verdict(self, files, code, present=(), absent=(), arch=None):
        """Runs the check on `files`: its exit code, and lines of output present and absent."""
        got, out = run(files, arch)
        self.assertEqual(got, code, out)
        for text in present:
            self.assertIn(text, out)
        for text in absent:
            self.assertNotIn(text, out)

    def test_an_inline_path_closes_a_circle(self):
        files = {
            "lib.rs": LIB,
            "a.rs": "use crate::b::B;\npub struct A;\n",
            "b.rs": "pub struct B;\nfn f() { crate::a::A; }\n",
        }
        self.verdict(files, 1, present=["module circle", "c/src/b.rs:2"])

    def test_comments_strings_and_test_code_make_no_edge(self):
        files = {
            "lib.rs": LIB,
            "a.rs": "use crate::b::B;\n",
            "b.rs": """\
                //! See [`crate::a`].
                /// Also `crate::a::A`.
                pub struct B; // crate::a
                /* crate::a::A */
                const S: &str = "crate::a::A";
                const R: &str = r#"crate::a"#;
                const C: char = '"';
                fn f<'a>(x: &'a str) -> &'a str { x }
                #[cfg(test)]
                mod tests {
                    use crate::a::A;
                }
                #[cfg(test)]
                mod more;
                #[cfg(test)]
                use crate::a::A;
            """,
            "b/more.rs": "use crate::a::A;\n",
        }
        self.verdict(files, 0, present=["a -> b"], absent=["b -> a"])

    def test_use_groups_and_super_reach_other_modules(self):
        files = {
            "lib.rs": "mod a;\nmod b;\nmod d;\n",
            "a.rs": "mod inner;\n",
            "a/inner.rs": "use super::super::b::B;\nuse super::Local;\n",
            "b.rs": "use crate::{d::D, self as _};\npub struct B;\n",
            "d.rs": "pub struct D;\n",
        }
        self.verdict(files, 0, present=["a -> b", "b -> d"], absent=["a -> a"])

    def test_the_folder_map_is_enforced(self):
        files = {
            "lib.rs": LIB,
            "a.rs": "use crate::b::B;\n",
            "b.rs": "pub struct B;\n",
        }
        allowed = """\
            ## Folder map of `c/src`

            | folder | owns | may import |
            |---|---|---|
            | `a/` | things | `b` |
            | `b.rs` | more | nothing |
        """
        self.verdict(files, 0, arch=allowed)
        forbidden = allowed.replace("| things | `b` |", "| things | nothing |")
        self.verdict(files, 1, present=["`a` may not import `b`"], arch=forbidden)
        unmapped = allowed.replace("| `b.rs` | more | nothing |\n", "")
        self.verdict(files, 1, present=["module `b` is not in ARCHITECTURE.md's folder map"], arch=unmapped)


if __name__ == "__main__":
    unittest.main()
