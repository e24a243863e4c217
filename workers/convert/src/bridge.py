# kiln's bridge to one warm LibreOffice: connects to the soffice process the
# worker started (over a named pipe), then converts one document at a time.
# Requests and answers are JSON lines on stdin/stdout:
#   {"detect": "/abs/in.doc"}
#     -> {"ok": true, "filter": "MS Word 95"}  ("" when nothing recognises it)
#   {"input": "/abs/in.docx", "output": "/abs/out.pdf", "filter": "MS Word 2007 XML", "filterOptions": ""}
#     -> {"ok": true} | {"ok": false, "error": "..."}
# An answer with "lost": true says the bridge lost its connection to soffice
# (soffice died during the call): the instance is gone, whatever soffice's
# process looks like at that instant.
# Which filters a file may be read with is kiln's decision, not the
# bridge's: it only reports what LibreOffice's type detection found.
# Documents load as `soffice --convert-to` loads them (hidden, read-only,
# silent), except that macros never run and links are never updated; it
# never asks questions (no interaction handler: a password prompt is an
# error).
import json
import sys
import time

import uno
from com.sun.star.beans import PropertyValue


def props(**values):
    out = []
    for name, value in values.items():
        p = PropertyValue()
        p.Name = name
        p.Value = value
        out.append(p)
    return tuple(out)


def connect(pipe):
    """The instance's desktop and its type detection service."""
    local = uno.getComponentContext()
    resolver = local.ServiceManager.createInstanceWithContext("com.sun.star.bridge.UnoUrlResolver", local)
    deadline = time.time() + 60
    while True:
        try:
            ctx = resolver.resolve("uno:pipe,name=%s;urp;StarOffice.ComponentContext" % pipe)
            services = ctx.ServiceManager
            return (
                services.createInstanceWithContext("com.sun.star.frame.Desktop", ctx),
                services.createInstanceWithContext("com.sun.star.document.TypeDetection", ctx),
            )
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def pdf_filter(doc):
    if doc.supportsService("com.sun.star.sheet.SpreadsheetDocument"):
        return "calc_pdf_Export"
    if doc.supportsService("com.sun.star.presentation.PresentationDocument"):
        return "impress_pdf_Export"
    if doc.supportsService("com.sun.star.drawing.DrawingDocument"):
        return "draw_pdf_Export"
    return "writer_pdf_Export"


def detect(detection, path):
    """The import filter LibreOffice's deep detection picks for the file,
    as `soffice --convert-to` would pick it."""
    found = detection.queryTypeByDescriptor(props(URL=uno.systemPathToFileUrl(path)), True)
    type_name, descriptor = found if isinstance(found, tuple) else (found, ())
    chosen = {p.Name: p.Value for p in descriptor}.get("FilterName") or ""
    if not chosen and type_name:
        chosen = {p.Name: p.Value for p in detection.getByName(type_name)}.get("PreferredFilter") or ""
    return {"ok": True, "filter": chosen}


def convert(desktop, request):
    options = dict(Hidden=True, ReadOnly=True, Silent=True, MacroExecutionMode=0, UpdateDocMode=0)
    if request.get("filter"):
        options["FilterName"] = request["filter"]
        options["FilterOptions"] = request.get("filterOptions", "")
    doc = desktop.loadComponentFromURL(uno.systemPathToFileUrl(request["input"]), "_blank", 0, props(**options))
    if doc is None:
        return {"ok": False, "error": "LibreOffice cannot open the file (damaged, protected or not a document)"}
    try:
        doc.storeToURL(uno.systemPathToFileUrl(request["output"]), props(FilterName=pdf_filter(doc)))
    finally:
        doc.close(True)
    return {"ok": True}


def reachable(desktop):
    """Whether soffice still answers: after a failed call, tells a document
    LibreOffice refused from a soffice that died during the call (whose
    error text varies with the moment it died)."""
    try:
        desktop.getFrames()
        return True
    except Exception:
        return False


def main():
    desktop, detection = connect(sys.argv[1])
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            if "detect" in request:
                answer = detect(detection, request["detect"])
            else:
                answer = convert(desktop, request)
        except Exception as error:  # an answer, not a dead bridge
            text = getattr(error, "Message", "") or str(error) or type(error).__name__
            answer = {"ok": False, "error": text, "lost": not reachable(desktop)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


main()
