#!/usr/bin/env python3
"""Compiles the README's and the guide's Rust snippets as a user's crate
would: a crate of its own whose only dependencies are floodguard and what a
user adds for a web service (axum, tokio, tonic). Doc tests cannot show
this: they see every dev-dependency of floodguard.

    scripts/check_snippets.py            # builds target/snippets

Each ```rust block (not `ignore`) becomes an example; rustdoc's hidden
lines (`# ...`) are kept, and a block without `fn main` is wrapped in one,
returning a Result when it ends with `Ok::<..>(())` as rustdoc does.
"""
import os
import pathlib
import re
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "README.md", *sorted((ROOT / "src" / "guide").glob("*.md"))]
CRATE = ROOT / "target" / "snippets"

MANIFEST = """[package]
name = "floodguard-snippets"
version = "0.0.0"
edition = "2024"
publish = false

[workspace]

[dependencies]
floodguard = { path = "../..", features = ["axum", "tonic", "toml", "console"] }
axum = "0.8"
tokio = { version = "1", features = ["full"] }
tonic = "0.14"
"""


# Wiring mistakes that must not compile, with the error they must give.
MUST_FAIL = {
    "serve_gated_with_socketaddr_info": ("E0277", """
use std::net::SocketAddr;
use floodguard::http::Guard;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let guard = Guard::builder().default_rules().build()?;
    let app = axum::Router::new().layer(guard.layer());
    let listener = guard.gate().build()?.listen(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
    // The mistake: the gated listener as is, with SocketAddr connect info.
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}
"""),
}


def blocks(text):
    for m in re.finditer(r"^```rust([^\n]*)\n(.*?)^```", text, re.S | re.M):
        flags = m.group(1)
        if "ignore" in flags:
            continue
        yield m.group(2)


def as_program(code):
    lines = [re.sub(r"^(\s*)# ?", r"\1", l) if re.match(r"^\s*#( |$)", l) else l
             for l in code.splitlines()]
    body = "\n".join(lines)
    if re.search(r"\bfn main\s*\(", body):
        return body + "\n"
    tail = [l for l in lines if l.strip()]
    if tail and tail[-1].strip().startswith("Ok::<"):
        ret = re.match(r"\s*Ok::<\(\),\s*(.*)>\(\(\)\)", tail[-1]).group(1)
        return f"fn main() -> Result<(), {ret}> {{\n{body}\n}}\n"
    return f"#[allow(unreachable_code)]\nfn main() {{\n{body}\n}}\n"


def main():
    if CRATE.exists():
        shutil.rmtree(CRATE)
    (CRATE / "examples").mkdir(parents=True)
    (CRATE / "src").mkdir()
    (CRATE / "Cargo.toml").write_text(MANIFEST)
    (CRATE / "src" / "lib.rs").write_text("")
    shutil.copy(ROOT / "Cargo.lock", CRATE / "Cargo.lock")
    n = 0
    for src in SOURCES:
        for i, code in enumerate(blocks(src.read_text())):
            name = f"{src.stem.lower().replace('-', '_')}_{i}"
            (CRATE / "examples" / f"{name}.rs").write_text(
                f"// From {src.relative_to(ROOT)}, block {i}.\n" + as_program(code))
            n += 1
    print(f"{n} snippets from {len(SOURCES)} files")
    # The repository's target dir: its dependencies are already built.
    env = dict(os.environ)
    env.setdefault("CARGO_TARGET_DIR", str(ROOT / "target"))
    r = subprocess.run(["cargo", "build", "--examples", "--quiet"], cwd=CRATE, env=env)
    if r.returncode != 0:
        sys.exit(r.returncode)
    for name, (code, program) in MUST_FAIL.items():
        (CRATE / "examples" / f"{name}.rs").write_text(program)
        r = subprocess.run(["cargo", "build", "--example", name, "--quiet"],
                           cwd=CRATE, env=env, capture_output=True, text=True)
        if r.returncode == 0 or f"error[{code}]" not in r.stderr:
            print(f"{name}: expected error {code}, got:\n{r.stderr}")
            sys.exit(1)
        (CRATE / "examples" / f"{name}.rs").unlink()
        print(f"{name}: fails with {code}, as it must (the guide says why)")


if __name__ == "__main__":
    main()
