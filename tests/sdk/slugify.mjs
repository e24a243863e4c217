// Prints, for each name in the JSON array SLUGIFY_NAMES, the object name
// Supermark's putFileServer gives it: slugify(path.parse(name).name) + ext,
// with @sindresorhus/slugify 2.2.1 as Supermark locks it.
import path from "node:path";
import slugify from "@sindresorhus/slugify";

const names = JSON.parse(process.env.SLUGIFY_NAMES);
console.log(JSON.stringify(names.map((name) => {
  const { name: stem, ext } = path.parse(name);
  return `${slugify(stem)}${ext}`;
})));
