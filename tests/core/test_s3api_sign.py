"""The engine's own SigV4 signing (strongroom/core/s3api.py) against botocore's, the
reference, on keys that need escaping and on endpoints with a trailing slash or a path
(a gateway under https://host/prefix): the signature must cover the path the request
goes to. The request is captured before it leaves; botocore signs the same request."""

import datetime
from unittest import mock

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from strongroom.core import s3api

KEYS = ["plain.txt", "dir/a b.txt", "we+ird=name&x.txt", "ü/é.age", "a~b!c*d'(e).json",
        "x%41y", "q?z#f", "dbl//slash"]


def _captured(client, method, key, query, body):
    seen = {}

    def urlopen(req, timeout=None):
        seen["url"], seen["headers"] = req.full_url, dict(req.header_items())
        raise OSError("captured")
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    with mock.patch.object(s3api, "utcnow", lambda: now), \
            mock.patch("urllib.request.urlopen", urlopen), pytest.raises(s3api.S3Error):
        client.request(method, "bucket", key, query, body=body,
                       headers={"content-type": "application/xml"} if body else None)
    return now, seen["url"], {k.lower(): v for k, v in seen["headers"].items()}


def _botocore_signature(now, method, url, headers, body):
    signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    req = AWSRequest(method=method, url=url, data=body or None,
                     headers={k: v for k, v in headers.items() if k in signed and k != "host"})
    req.context["timestamp"] = headers["x-amz-date"]
    auth = S3SigV4Auth(Credentials("AKIDEXAMPLE", "secret/+key"), "s3", "eu-west-1")
    # botocore reads the clock itself (get_current_datetime): it is given our request's
    # second, or a run that crosses a second boundary would compare two dates
    with mock.patch("botocore.auth.get_current_datetime", lambda: now.replace(tzinfo=None)):
        auth.add_auth(req)
    return req.headers["Authorization"].split("Signature=")[1]


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", "http://127.0.0.1:9000/",
                                      "https://gw.example/s3", "https://gw.example/a/b/"])
@pytest.mark.parametrize("key", KEYS)
def test_the_signature_is_botocores_for_the_path_the_request_goes_to(endpoint, key):
    client = s3api.Client(endpoint, "eu-west-1", "AKIDEXAMPLE", "secret/+key")
    prefix = endpoint.split("://", 1)[1].partition("/")[2].rstrip("/")
    for method, query, body in (("HEAD", {}, b""),
                                ("PUT", {"retention": "", "versionId": "3/L4k+cM=="},
                                 b"<Retention/>")):
        now, url, headers = _captured(client, method, key, query, body)
        path = url.split("://", 1)[1].partition("/")[2]
        assert path.startswith((prefix + "/" if prefix else "") + "bucket/"), url
        assert "//bucket" not in url
        ours = headers["authorization"].split("Signature=")[1]
        assert ours == _botocore_signature(now, method, url, headers, body), (method, url)
