// Bundles src/main.js (and the CSS it imports) into ../static/editor/editor.{js,css}.
//
//   node build.mjs          write the bundle (npm run build; `make assets` from the top)
//   node build.mjs --check  build in memory and fail if the committed bundle differs
//                           (npm run check; run by tests/browser/test_bundle.py)
//
// The output is committed, so `make run` needs no Node. esbuild's output depends only on its
// version, these options and the sources in node_modules, all pinned by package-lock.json.
import { readFile, writeFile, mkdir } from 'node:fs/promises'
import { dirname, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as esbuild from 'esbuild'

const here = dirname(fileURLToPath(import.meta.url))
const outdir = resolve(here, '..', 'static', 'editor')
const check = process.argv.includes('--check')

const result = await esbuild.build({
  entryPoints: { editor: resolve(here, 'src', 'main.js') },
  outdir,
  bundle: true,
  format: 'esm',
  // Code loaded only when needed (the editor's code-block languages) goes in files of its own.
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  minify: true,
  legalComments: 'none', // the packages and their licences are listed in LICENSES.txt
  charset: 'utf8',
  logLevel: 'warning',
  write: false,
  // One copy of Yjs, whoever imports it ("Yjs was already imported" breaks instanceof checks).
  alias: { yjs: resolve(here, 'node_modules', 'yjs', 'dist', 'yjs.mjs') },
  metafile: true,
})

const yjsCopies = Object.keys(result.metafile.inputs).filter((path) => /node_modules\/yjs\/.*yjs\.mjs$/.test(path))
if (yjsCopies.length !== 1) {
  console.error(`expected exactly one Yjs in the bundle, found: ${yjsCopies.join(', ') || 'none'}`)
  process.exit(1)
}

// The name, version and licence of every package in the bundle, committed next to it.
const packages = new Set()
for (const path of Object.keys(result.metafile.inputs)) {
  const match = path.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/)
  if (match) packages.add(match[1])
}
const lines = []
for (const name of [...packages].sort()) {
  const meta = JSON.parse(await readFile(resolve(here, 'node_modules', name, 'package.json'), 'utf8'))
  lines.push(`${meta.name}@${meta.version}  ${meta.license || 'see package'}`)
}
const licenses = `Packages bundled into editor.js and editor.css (frontend/build.mjs writes this file):\n\n${lines.join('\n')}\n`
const outputs = [
  ...result.outputFiles.map((file) => ({ path: file.path, contents: file.contents })),
  { path: resolve(outdir, 'LICENSES.txt'), contents: new TextEncoder().encode(licenses) },
]

const stale = []
for (const file of outputs) {
  const name = relative(resolve(here, '..'), file.path)
  if (check) {
    const committed = await readFile(file.path).catch(() => null)
    if (!committed || Buffer.compare(committed, Buffer.from(file.contents)) !== 0) stale.push(name)
  } else {
    await mkdir(dirname(file.path), { recursive: true })
    await writeFile(file.path, file.contents)
    console.log(`wrote ${name} (${(file.contents.length / 1024).toFixed(0)} KiB)`)
  }
}
if (stale.length) {
  console.error(`out of date with frontend/src: ${stale.join(', ')}\nrun \`make assets\` and commit the result`)
  process.exit(1)
}
if (check) console.log('static/editor is up to date with frontend/src')
