// Prints the dashboard's download size: its JavaScript and CSS, gzipped (what a browser
// fetches on a first visit). Usage: node scripts/bundle-size.mjs [dist dir]
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const dist = process.argv[2] ?? new URL("../dist", import.meta.url).pathname;
const GOAL_KB = 300;

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

let raw = 0;
let gzipped = 0;
for (const f of files(dist).filter((f) => /\.(js|css)$/.test(f))) {
  const bytes = readFileSync(f);
  raw += bytes.length;
  gzipped += gzipSync(bytes, { level: 9 }).length;
}
if (raw === 0) {
  console.error(`no .js or .css files under ${dist}: build the dashboard first (npm run build)`);
  process.exit(1);
}
const kb = (n) => (n / 1024).toFixed(1);
console.log(`bundle size: ${kb(gzipped)} KB gzipped JS+CSS (${kb(raw)} KB raw; goal <= ${GOAL_KB} KB)`);
