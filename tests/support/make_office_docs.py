"""Writes one document of each office format kiln converts, each holding a
marker text, into the folder given as the first argument. The OpenDocument
files are written by hand (a zip of XML); the others are converted from
them by LibreOffice itself, with a private profile so tests can run side
by side. Prints nothing; exits non-zero if a format could not be made."""
import os
import subprocess
import sys
import zipfile

out = sys.argv[1]
marker = sys.argv[2]

MANIFEST = """<?xml version="1.0" encoding="UTF-8"?>
<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">
 <manifest:file-entry manifest:full-path="/" manifest:media-type="{mime}"/>
 <manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>
</manifest:manifest>"""

NS = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
      'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
      'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
      'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
      'xmlns:presentation="urn:oasis:names:tc:opendocument:xmlns:presentation:1.0" '
      'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" office:version="1.2"')

BODIES = {
    "odt": ("application/vnd.oasis.opendocument.text",
            f"<office:text><text:p>{marker} in a text document</text:p></office:text>"),
    "ods": ("application/vnd.oasis.opendocument.spreadsheet",
            f"<office:spreadsheet><table:table table:name=\"Sheet1\"><table:table-row>"
            f"<table:table-cell office:value-type=\"string\"><text:p>{marker} in a sheet</text:p></table:table-cell>"
            f"</table:table-row></table:table></office:spreadsheet>"),
    "odp": ("application/vnd.oasis.opendocument.presentation",
            f"<office:presentation><draw:page draw:name=\"one\"><draw:frame svg:x=\"2cm\" svg:y=\"2cm\" svg:width=\"20cm\" svg:height=\"3cm\">"
            f"<draw:text-box><text:p>{marker} on slide one</text:p></draw:text-box></draw:frame></draw:page>"
            f"<draw:page draw:name=\"two\"><draw:frame svg:x=\"2cm\" svg:y=\"2cm\" svg:width=\"20cm\" svg:height=\"3cm\">"
            f"<draw:text-box><text:p>slide two</text:p></draw:text-box></draw:frame></draw:page></office:presentation>"),
}

for ext, (mime, body) in BODIES.items():
    with zipfile.ZipFile(os.path.join(out, f"sample.{ext}"), "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), mime)  # stored, first
        z.writestr("META-INF/manifest.xml", MANIFEST.format(mime=mime), zipfile.ZIP_DEFLATED)
        z.writestr("content.xml", f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {NS}><office:body>{body}</office:body></office:document-content>', zipfile.ZIP_DEFLATED)

with open(os.path.join(out, "sample.txt"), "w") as f:
    f.write(f"{marker} in plain text\n")
with open(os.path.join(out, "sample.csv"), "w") as f:
    f.write(f"name,value\n{marker},42\n")
with open(os.path.join(out, "sample.html"), "w") as f:
    f.write(f"<!DOCTYPE html><html><body><h1>{marker} in HTML</h1><p>hello</p></body></html>")

profile = "file://" + os.path.join(out, ".profile")
soffice = os.environ.get("KILN_SOFFICE_PATH", "/usr/lib/libreoffice/program/soffice.bin")
derived = {"odt": ["docx", "doc", "rtf"], "ods": ["xlsx", "xls"], "odp": ["pptx", "ppt"]}
for source, targets in derived.items():
    for target in targets:
        # soffice.bin asks to be started again (81) after making a profile.
        for _ in range(3):
            done = subprocess.run([soffice, "--headless", "--norestore", f"-env:UserInstallation={profile}",
                                   "--convert-to", target, "--outdir", out, os.path.join(out, f"sample.{source}")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
            if done.returncode != 81:
                break
        if not os.path.exists(os.path.join(out, f"sample.{target}")):
            sys.exit(f"LibreOffice did not make sample.{target}")

# Password-protected copies: OOXML encrypted by msoffcrypto-tool (PyPI).
subprocess.run(["msoffcrypto-tool", "-e", "-p", "secret", os.path.join(out, "sample.docx"),
                os.path.join(out, "locked.docx")], check=True)
