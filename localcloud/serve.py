"""The localcloud daemon: moto (EC2, SSM, Auto Scaling...) on loopback, IMDS, and the reconciler, in one process."""

import json
import logging
import os
import signal
import threading

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server

from localcloud import config, ec2, images, network
from localcloud.imds import Imds
from localcloud.podman import Podman
from localcloud.reconciler import Reconciler

log = logging.getLogger("localcloud")
HEALTH_PATH = "/localcloud/health"


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


def serve(paths, port):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    podman = Podman(paths.containers_conf)
    image_refs = {"base": images.base_image_ref(), "baked": images.baked_image_ref()}
    network.ensure_network(podman)
    network.ensure_imds_address()

    reconciler = Reconciler(podman, paths, image_refs)
    public_key = paths.ssh_key.with_suffix(".pub").read_text().strip() if paths.ssh_key.with_suffix(".pub").exists() else None
    ec2.install(reconciler, default_public_key=public_key)

    moto_app = DomainDispatcherApplication(create_backend_app)

    def app(environ, start_response):
        if environ.get("PATH_INFO") == HEALTH_PATH:  # cheap liveness check for the CLI (moto's data.json is slow)
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
            return [b"ok\n"]
        try:
            return moto_app(environ, start_response)
        finally:
            if environ.get("REQUEST_METHOD") != "GET":
                reconciler.wake()  # an API call may have changed an instance (or reset moto)

    api = make_server("127.0.0.1", port, app, threaded=True, request_handler=_QuietHandler)
    imds = Imds(reconciler).start()
    threading.Thread(target=reconciler.run, name="reconciler", daemon=True).start()
    api_thread = threading.Thread(target=api.serve_forever, name="api", daemon=True)
    api_thread.start()

    paths.info.write_text(json.dumps({"pid": os.getpid(), "port": port, "endpoint_url": config.endpoint_url(port), "images": image_refs}) + "\n")
    paths.pid.write_text("%d\n" % os.getpid())
    log.info("serving EC2 API on %s, IMDS on %s:%d", config.endpoint_url(port), config.IMDS_ADDRESS, config.IMDS_PORT)

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    log.info("stopping")
    reconciler.stop()
    imds.stop()
    api.shutdown()
    api.server_close()
    return 0
