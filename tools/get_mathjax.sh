#!/usr/bin/env bash
# Puts MathJax (npm package `mathjax`, pinned) into book/_static/mathjax, so the built book
# typesets its maths without a network connection. Not committed (.gitignore); `make book`
# and `make test` call this through `make mathjax`.
# Without npm or a registry, it says so and exits 0: the book still builds and loads
# MathJax from its CDN (book/_ext/drdm_book.py decides, at build time).
#   usage: tools/get_mathjax.sh [VERSION] [DEST]
set -euo pipefail
version=${1:-3.2.2}
dest=${2:-book/_static/mathjax}
if [ -f "$dest/tex-mml-chtml.js" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "note: npm not found; the book will load MathJax from its CDN (maths needs a network connection)"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && npm pack --silent "mathjax@$version" >/dev/null 2>"$tmp/npm.err"); then
  echo "note: npm could not fetch mathjax@$version ($(tail -n 1 "$tmp/npm.err")); the book will load MathJax from its CDN"
  exit 0
fi
tar -xzf "$tmp/mathjax-$version.tgz" -C "$tmp"
es5="$tmp/package/es5"
# the one combined component Sphinx loads (TeX and MathML in, CommonHTML out) and what it
# loads on demand: TeX extensions, fonts, the menu's renderers and accessibility tools
mkdir -p "$tmp/out"
cp "$es5/tex-mml-chtml.js" "$tmp/package/LICENSE" "$tmp/out/"
for part in a11y adaptors input output sre ui; do
  cp -r "$es5/$part" "$tmp/out/"
done
echo "$version" > "$tmp/out/VERSION"
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.old"
[ -e "$dest" ] && mv "$dest" "$dest.old"
mv "$tmp/out" "$dest"
rm -rf "$dest.old"
echo "MathJax $version in $dest ($(du -sh "$dest" | cut -f1))"
