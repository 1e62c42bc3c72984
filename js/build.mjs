// Bundle the widgets' front end into the Python package: `node js/build.mjs [outdir]`.
// nbchat/static/{panel.js, compare.js, nbchat.css} are committed, so installing nbchat needs no
// Node; tests/test_js_bundle.py rebuilds into a temp folder and checks they are byte-identical.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const outdir = path.resolve(process.argv[2] ?? path.join(root, "nbchat", "static"));

// KaTeX lists each font as woff2, woff and ttf; every browser JupyterLab supports reads woff2, so
// only those are inlined (as data: URLs: anywidget injects the CSS as text, relative URLs break).
/** @type {esbuild.Plugin} */
const katexWoff2Only = {
  name: "katex-woff2-only",
  setup(build) {
    build.onLoad({ filter: /katex[\\/]dist[\\/]katex\.css$/ }, async (args) => {
      const css = await readFile(args.path, "utf8");
      const trimmed = css.replace(/,\s*url\([^)]*\.woff\) format\("woff"\),\s*url\([^)]*\.ttf\) format\("truetype"\)/g, "");
      if (trimmed === css || /\.(woff|ttf)\)/.test(trimmed)) throw new Error("KaTeX's @font-face rules changed: update js/build.mjs");
      return { contents: trimmed, loader: "css", resolveDir: path.dirname(args.path) };
    });
  },
};

await esbuild.build({
  absWorkingDir: root,
  entryPoints: ["js/panel.js", "js/compare.js", "js/nbchat.css"],
  outdir,
  bundle: true,
  format: "esm",
  minify: true,
  target: ["es2020", "chrome90", "firefox90", "safari15"],
  charset: "utf8",
  legalComments: "eof",
  loader: { ".woff2": "dataurl" },
  plugins: [katexWoff2Only],
  logLevel: "warning",
});
