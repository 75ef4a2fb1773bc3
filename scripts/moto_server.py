"""moto's server for keyward's tests, on one thread.

`moto_server` serves each request on its own thread, and moto checks a TransactWriteItems'
conditions and then writes without a lock, so two racing transactions can both pass their
checks. DynamoDB itself never lets that happen. Serving one request at a time gives moto the
atomicity that DynamoDB guarantees, which the race tests depend on; everything else is
moto's own server.

One change to moto: before a TransactWriteItems, moto deep-copies the whole table once for
*every item* in the transaction, to roll back a failed one. On a table of a few thousand
items that takes seconds and holds gigabytes. The copies are identical, so here each table is
copied once per transaction; the rollback is the same.

usage: python scripts/moto_server.py PORT
"""

import copy
import sys
import types

from werkzeug.serving import run_simple

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models.table import Table

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


def copy_each_table_once(transact_write_items):
    def wrapped(self, transact_items):
        copies = {}

        def deepcopy(value, memo=None):
            if isinstance(value, Table):
                if id(value) not in copies:
                    copies[id(value)] = copy.deepcopy(value)
                return copies[id(value)]
            return copy.deepcopy(value, memo)

        dynamodb_models.copy = types.SimpleNamespace(deepcopy=deepcopy)
        try:
            return transact_write_items(self, transact_items)
        finally:
            dynamodb_models.copy = copy

    return wrapped


dynamodb_models.DynamoDBBackend.transact_write_items = copy_each_table_once(
    dynamodb_models.DynamoDBBackend.transact_write_items
)

if __name__ == "__main__":
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=False, request_handler=MotoRequestHandler)
