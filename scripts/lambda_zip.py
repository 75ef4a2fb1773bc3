"""Zips a Lambda function's `bootstrap` into `bootstrap.zip` beside it, the way Lambda's
`provided` runtimes want it: one executable file named `bootstrap` at the root.

The zip is the same bytes for the same binary (a fixed timestamp and mode), so `sam deploy`
uploads, and CloudFormation updates, only the functions whose binary changed. A zip that
already holds this very binary is left as it is.

usage: lambda_zip.py FOLDER
"""

import os
import sys
import zipfile
import zlib

folder = sys.argv[1]
binary = os.path.join(folder, "bootstrap")
archive = os.path.join(folder, "bootstrap.zip")
with open(binary, "rb") as f:
    data = f.read()
try:
    with zipfile.ZipFile(archive) as existing:
        held = existing.getinfo("bootstrap")
        if held.CRC == zlib.crc32(data) and held.file_size == len(data):
            sys.exit(0)
except (OSError, KeyError, zipfile.BadZipFile):
    pass
entry = zipfile.ZipInfo("bootstrap", date_time=(1980, 1, 1, 0, 0, 0))
entry.external_attr = 0o100755 << 16
entry.create_system = 3
entry.compress_type = zipfile.ZIP_DEFLATED
partial = archive + ".partial"
with zipfile.ZipFile(partial, "w") as z:
    z.writestr(entry, data, compresslevel=9)
os.replace(partial, archive)
