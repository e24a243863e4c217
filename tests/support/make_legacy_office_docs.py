"""Writes documents in the older Microsoft Office formats, and in formats
Office saved under the same names, each holding a marker text, into the
folder given as the first argument, with a `manifest.json` naming, for each
file, the LibreOffice import filter that must read it (null: its contents
are of another family than its name says, and kiln must refuse it).

LibreOffice still writes Word 97, RTF, Word and Excel 2003 XML, templates
and PowerPoint 97, so those are converted from hand-written OpenDocument
files by LibreOffice itself. It no longer writes Word 6.0/95 or Excel
2.x-5.0/95, so those are written here byte by byte: an OLE2 compound file
holding a Word 6 FIB and its text, or BIFF records (bare for Excel 2 to 4,
in a `Book` stream for Excel 5.0/95). Exits non-zero if a file could not
be made."""
import json
import os
import struct
import subprocess
import sys
import zipfile

out = sys.argv[1]
marker = sys.argv[2]

# --- OLE2 compound files -------------------------------------------------

END, FREE, FAT_SECTOR = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD


def ole2(streams):
    """An OLE2 compound file (512-byte sectors) holding `streams` (name ->
    bytes) at its root. Streams are padded to the 4096-byte mini-stream
    cutoff so that all of them live in regular sectors."""
    names = sorted(streams, key=lambda n: (len(n), n.upper()))
    datas = [streams[n] + b"\0" * max(0, 4096 - len(streams[n])) for n in names]

    def sectors(size):
        return (size + 511) // 512

    data_sectors = sum(sectors(len(d)) for d in datas)
    dir_sectors = sectors(128 * (len(names) + 1))
    fat_sectors = 1
    while fat_sectors * 128 < fat_sectors + dir_sectors + data_sectors:
        fat_sectors += 1
    fat = [FAT_SECTOR] * fat_sectors
    first_dir = len(fat)
    fat += [first_dir + i + 1 for i in range(dir_sectors - 1)] + [END]
    starts = []
    for data in datas:
        start, count = len(fat), sectors(len(data))
        starts.append(start)
        fat += [start + i + 1 for i in range(count - 1)] + [END]
    fat += [FREE] * (fat_sectors * 128 - len(fat))

    def entry(name, kind, child, right, start, size):
        raw = name.encode("utf-16-le") + b"\0\0"
        return (raw.ljust(64, b"\0") + struct.pack("<HBB", len(raw), kind, 1)
                + struct.pack("<III", FREE, right, child) + b"\0" * 36 + struct.pack("<IQ", start, size))

    # The streams hang off the root as a chain of right siblings, in the
    # order the format's red-black tree compares names.
    entries = [entry("Root Entry", 5, 1, FREE, END, 0)]
    for i, data in enumerate(datas):
        right = i + 2 if i + 1 < len(datas) else FREE
        entries.append(entry(names[i], 2, FREE, right, starts[i], len(data)))
    directory = b"".join(entries).ljust(dir_sectors * 512, b"\0")
    header = (bytes.fromhex("D0CF11E0A1B11AE1") + b"\0" * 16 + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
              + b"\0" * 6 + struct.pack("<IIIIIIIII", 0, fat_sectors, first_dir, 0, 4096, END, 0, END, 0))
    header += b"".join(struct.pack("<I", i) for i in range(fat_sectors))
    header += struct.pack("<I", FREE) * (109 - fat_sectors)
    body = b"".join(struct.pack("<I", x) for x in fat) + directory
    return header + body + b"".join(d.ljust(sectors(len(d)) * 512, b"\0") for d in datas)


# --- Word 6.0 and Word 95 ------------------------------------------------

def word6(nfib):
    """One paragraph of 8-bit text after a Word 6 FIB (nFib 0x65 for Word
    6.0, 0x68 for Word 95), not fast-saved, in a WordDocument stream."""
    text = f"{marker} in an old Word document\r".encode("cp1252")
    fc_min = 0x300
    fib = bytearray(fc_min)
    # wIdent, nFib, nProduct, lid, pnNext, flags, nFibBack
    struct.pack_into("<HHHHHHH", fib, 0, 0xA5DC, nfib, 0xC02D, 0x0409, 0, 0, nfib)
    # chse, chseTables, fcMin, fcMac, cbMac
    struct.pack_into("<HHIII", fib, 20, 0, 0, fc_min, fc_min + len(text), fc_min + len(text))
    struct.pack_into("<i", fib, 0x34, len(text))  # ccpText
    return ole2({"WordDocument": bytes(fib) + text})


# --- Excel 2.x to 5.0/95 -------------------------------------------------

def record(kind, payload=b""):
    return struct.pack("<HH", kind, len(payload)) + payload


def biff_bare(version):
    """A one-sheet Excel 2.x, 3.0 or 4.0 file: BIFF records, no container."""
    text = marker.encode()
    if version == 2:
        return (record(0x0009, struct.pack("<HH", 0x0002, 0x0010))
                + record(0x0000, struct.pack("<HHHH", 0, 2, 0, 1))
                + record(0x0004, struct.pack("<HH", 0, 0) + b"\0\0\0" + bytes([len(text)]) + text)
                + record(0x000A))
    bof = {3: 0x0209, 4: 0x0409}[version]
    return (record(bof, struct.pack("<HHH", 0, 0x0010, 0))
            + record(0x0200, struct.pack("<HHHHH", 0, 2, 0, 1, 0))
            + record(0x0204, struct.pack("<HHHH", 0, 0, 0x0F, len(text)) + text)
            + record(0x000A))


def biff5():
    """An Excel 5.0/95 workbook: BIFF5 globals and one sheet in a `Book`
    stream."""
    name = b"Sheet1"
    text = marker.encode()

    def workbook_globals(sheet_at):
        return (record(0x0809, struct.pack("<HHHH", 0x0500, 0x0005, 0x0DBB, 0x07CC))
                + record(0x0042, struct.pack("<H", 1252))
                + record(0x0085, struct.pack("<IBBB", sheet_at, 0, 0, len(name)) + name)
                + record(0x000A))

    sheet = (record(0x0809, struct.pack("<HHHH", 0x0500, 0x0010, 0x0DBB, 0x07CC))
             + record(0x0200, struct.pack("<HHHHH", 0, 2, 0, 2, 0))
             + record(0x0204, struct.pack("<HHHH", 0, 0, 0x0F, len(text)) + text)
             + record(0x0203, struct.pack("<HHHd", 1, 0, 0x0F, 42.0))
             + record(0x000A))
    return ole2({"Book": workbook_globals(len(workbook_globals(0))) + sheet})


# --- Formats LibreOffice still writes ------------------------------------

NS = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
      'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
      'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
      'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
      'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" '
      'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
      'xmlns:dc="http://purl.org/dc/elements/1.1/" office:version="1.2"')
MANIFEST = ('<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
            'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
            '<manifest:file-entry manifest:full-path="/" manifest:media-type="{mime}"/>'
            '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
            '</manifest:manifest>')

AUTHORS = ["Ann Author", "Bo Reviewer", "Cy Editor"]
# A table of authors whose cells hold insertions and deletions tracked
# under their names.
REVISIONS = (
    "<office:text><text:tracked-changes text:track-changes=\"true\">"
    + "".join(
        f'<text:changed-region text:id="in{i}"><text:insertion><office:change-info><dc:creator>{a}</dc:creator>'
        f'<dc:date>2024-0{i + 1}-02T10:00:00</dc:date></office:change-info></text:insertion></text:changed-region>'
        f'<text:changed-region text:id="out{i}"><text:deletion><office:change-info><dc:creator>{a}</dc:creator>'
        f'<dc:date>2024-0{i + 1}-03T10:00:00</dc:date></office:change-info><text:p>removed by {a}</text:p>'
        f'</text:deletion></text:changed-region>'
        for i, a in enumerate(AUTHORS))
    + f"</text:tracked-changes><text:p>{marker} with revision marks</text:p>"
    + '<table:table table:name="Authors"><table:table-column table:number-columns-repeated="2"/>'
    + "".join(
        f'<table:table-row><table:table-cell office:value-type="string"><text:p>{a}</text:p></table:table-cell>'
        f'<table:table-cell office:value-type="string"><text:p>kept <text:change-start text:change-id="in{i}"/>'
        f'added by {a}<text:change-end text:change-id="in{i}"/> and <text:change text:change-id="out{i}"/>'
        f'the end</text:p></table:table-cell></table:table-row>'
        for i, a in enumerate(AUTHORS))
    + "</table:table></office:text>")
# A table of contents, headings, and on every line page, date, author,
# file name, sequence, cross-reference, expression and statistics fields.
FIELDS = (
    '<office:text><text:table-of-content text:name="Contents"><text:table-of-content-source '
    'text:outline-level="3"/><text:index-body/></text:table-of-content>'
    f"<text:p>{marker} full of fields</text:p>"
    + "".join(f'<text:h text:outline-level="{1 + i % 3}">Heading {i}</text:h>' for i in range(20))
    + "".join(
        f'<text:p>Line {i}: page <text:page-number text:select-page="current">1</text:page-number> of '
        f'<text:page-count>1</text:page-count>, <text:date text:date-value="2024-01-01">2024-01-01</text:date>, '
        f'<text:author-name>a</text:author-name>, <text:file-name>f</text:file-name>, '
        f'<text:sequence text:name="Figure" text:formula="ooow:Figure+1" style:num-format="1">{i}</text:sequence>, '
        f'<text:bookmark text:name="mark{i}"/><text:bookmark-ref text:reference-format="page" '
        f'text:ref-name="mark{max(i - 1, 0)}">1</text:bookmark-ref>, '
        f'<text:expression text:formula="ooow:{i}*2" office:value-type="float" office:value="{i * 2}">{i * 2}'
        f'</text:expression>, <text:word-count>1</text:word-count></text:p>'
        for i in range(150))
    + "</office:text>")
SOURCES = {
    "text.odt": ("application/vnd.oasis.opendocument.text",
                 f"<office:text><text:p>{marker} in a text document</text:p></office:text>"),
    "revisions.odt": ("application/vnd.oasis.opendocument.text", REVISIONS),
    "fields.odt": ("application/vnd.oasis.opendocument.text", FIELDS),
    "sheet.ods": ("application/vnd.oasis.opendocument.spreadsheet",
                  '<office:spreadsheet><table:table table:name="Sheet1"><table:table-row>'
                  f'<table:table-cell office:value-type="string"><text:p>{marker} in a sheet</text:p>'
                  "</table:table-cell></table:table-row></table:table></office:spreadsheet>"),
    "slides.odp": ("application/vnd.oasis.opendocument.presentation",
                   '<office:presentation><draw:page draw:name="one"><draw:frame svg:x="2cm" svg:y="2cm" '
                   'svg:width="20cm" svg:height="3cm"><draw:text-box>'
                   f"<text:p>{marker} on a slide</text:p></draw:text-box></draw:frame></draw:page>"
                   "</office:presentation>"),
}
sources = os.path.join(out, "sources")
os.makedirs(sources, exist_ok=True)
for name, (mime, body) in SOURCES.items():
    with zipfile.ZipFile(os.path.join(sources, name), "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), mime)  # stored, first
        z.writestr("META-INF/manifest.xml", MANIFEST.format(mime=mime), zipfile.ZIP_DEFLATED)
        z.writestr("content.xml", f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {NS}>'
                                  f"<office:body>{body}</office:body></office:document-content>",
                   zipfile.ZIP_DEFLATED)

soffice = os.environ.get("KILN_SOFFICE_PATH", "/usr/lib/libreoffice/program/soffice.bin")
profile = "file://" + os.path.join(out, ".profile")


def libreoffice_writes(source, target, export, name):
    """`source` saved by LibreOffice with the export filter `export` as
    `name` in the output folder."""
    made = os.path.join(sources, f"{os.path.splitext(source)[0]}.{target}")
    for _ in range(3):  # soffice.bin asks to be started again (81) after making a profile
        done = subprocess.run([soffice, "--headless", "--norestore", f"-env:UserInstallation={profile}",
                               "--convert-to", f"{target}:{export}", "--outdir", sources,
                               os.path.join(sources, source)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        if done.returncode != 81:
            break
    if not os.path.exists(made):
        sys.exit(f"LibreOffice did not write {source} as {export}")
    os.replace(made, os.path.join(out, name))


# name -> the import filter LibreOffice's detection picks (None: refused).
# Its detection weighs the name too: Office files under another Office
# extension read as templates.
manifest = {}
written_here = [
    # (file name, its bytes, filter that must read it)
    ("word6.doc", word6(0x65), "MS Word 95"),
    ("word95.doc", word6(0x68), "MS Word 95"),
    ("excel2.xls", biff_bare(2), "MS Excel 4.0"),
    ("excel3.xls", biff_bare(3), "MS Excel 4.0"),
    ("excel4.xls", biff_bare(4), "MS Excel 4.0"),
    ("excel95.xls", biff5(), "MS Excel 95"),
]
for name, data, reads_with in written_here:
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
    manifest[name] = reads_with

written = [
    # (source, extension, export filter, file name, filter that must read it)
    ("text.odt", "doc", "MS Word 97", "word97.doc", "MS Word 97"),
    ("revisions.odt", "doc", "MS Word 97", "word97-revisions.doc", "MS Word 97"),
    ("fields.odt", "doc", "MS Word 97", "word97-fields.doc", "MS Word 97"),
    ("text.odt", "dot", "MS Word 97 Vorlage", "word97-template.doc", "MS Word 97"),
    ("text.odt", "rtf", "Rich Text Format", "rtf-saved-as.doc", "Rich Text Format"),
    ("text.odt", "xml", "MS Word 2003 XML", "word2003-xml.doc", "MS Word 2003 XML"),
    ("text.odt", "docx", "MS Word 2007 XML", "docx-named.doc", "MS Word 2007 XML"),
    ("text.odt", "doc", "MS Word 97", "doc-named.docx", "MS Word 97"),
    ("text.odt", "html", "HTML (StarWriter)", "html-named.doc", None),
    ("sheet.ods", "xls", "MS Excel 97", "excel97.xls", "MS Excel 97"),
    ("sheet.ods", "xlt", "MS Excel 97 Vorlage/Template", "excel97-template.xls", "MS Excel 97"),
    ("sheet.ods", "xml", "MS Excel 2003 XML", "excel2003-xml.xls", "MS Excel 2003 XML Orcus"),
    ("sheet.ods", "xlsx", "Calc MS Excel 2007 XML", "xlsx-named.xls", "Calc MS Excel 2007 XML"),
    ("sheet.ods", "xls", "MS Excel 97", "xls-named.xlsx", "MS Excel 97 Vorlage/Template"),
    ("sheet.ods", "csv", "Text - txt - csv (StarCalc)", "csv-named.xls", None),
    ("slides.odp", "ppt", "MS PowerPoint 97", "powerpoint97.ppt", "MS PowerPoint 97"),
    ("slides.odp", "pot", "MS PowerPoint 97 Vorlage", "powerpoint97-template.ppt", "MS PowerPoint 97"),
    ("slides.odp", "pptx", "Impress MS PowerPoint 2007 XML", "pptx-named.ppt", "Impress MS PowerPoint 2007 XML"),
    ("slides.odp", "ppt", "MS PowerPoint 97", "ppt-named.pptx", "MS PowerPoint 97 Vorlage"),
]
for source, extension, export, name, reads_with in written:
    libreoffice_writes(source, extension, export, name)
    manifest[name] = reads_with

with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
