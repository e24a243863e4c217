// Supermark's own page path, reproduced as its convert-pdf-to-image-route
// task and its /api/mupdf/convert-page route run it: for each page in turn,
// download the whole PDF over HTTP, open it with mupdf.js (the version in
// Supermark's lockfile), render the page at scale 3 (2 from 1600 pt wide)
// with annotations, encode PNG and JPEG (quality 80), keep the smaller.
// Usage: node pages.mjs <pdf url> <page count>; prints the seconds taken,
// measured after mupdf.js has loaded (Supermark's server keeps it loaded).
import * as mupdf from "mupdf";

const [url, count] = [process.argv[2], Number(process.argv[3])];
let bytes = 0;
const started = performance.now();
for (let pageNumber = 1; pageNumber <= count; pageNumber++) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`GET ${url}: ${response.status}`);
  const buffer = await response.arrayBuffer();
  const doc = new mupdf.PDFDocument(buffer);
  const page = doc.loadPage(pageNumber - 1);
  const [ulx, uly, lrx, lry] = page.getBounds();
  const width = Math.abs(lrx - ulx);
  const scale = width >= 1600 ? 2 : 3;
  const pixmap = page.toPixmap(mupdf.Matrix.scale(scale, scale), mupdf.ColorSpace.DeviceRGB, false, true);
  page.getLinks();
  const png = pixmap.asPNG();
  const jpeg = pixmap.asJPEG(80, false);
  bytes += png.length < jpeg.length ? png.length : jpeg.length;
  pixmap.destroy();
  page.destroy();
  doc.destroy();
}
const seconds = (performance.now() - started) / 1000;
console.log(JSON.stringify({ seconds, bytes }));
