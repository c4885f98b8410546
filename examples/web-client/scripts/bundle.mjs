// Bundles src/main.ts into dist/app.js and copies the static files next to it.
// Run by `npm run build` after code generation and type checking.
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const dist = `${root}dist`;

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });

const result = await build({
  absWorkingDir: root,
  entryPoints: ["src/main.ts"],
  outfile: "dist/app.js",
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022"],
  minify: true,
  sourcemap: true,
  legalComments: "linked",
  metafile: true,
  logLevel: "warning",
});

for (const file of ["index.html", "styles.css"]) {
  await copyFile(`${root}src/${file}`, `${dist}/${file}`);
}

const bytes = result.metafile.outputs["dist/app.js"]?.bytes ?? 0;
console.log(`dist/ ready: index.html, styles.css, app.js (${(bytes / 1024).toFixed(1)} KiB)`);
