# Varnish as the suite's maintainers run it: the distribution's stock
# /etc/varnish/default.vcl with the backend port pointed at the test server
# (their docker/setup.sh does `sed s/8080/8000/`), and varnishd started with
# -p default_ttl=0 -p default_grace=0 -p default_keep=3600 -s malloc,64M
# (their docker/serve.sh). Everything else is the built-in VCL.
vcl 4.1;

backend default {
    .host = "127.0.0.1";
    .port = "@ORIGIN_PORT@";
}

sub vcl_recv {
}

sub vcl_backend_response {
}

sub vcl_deliver {
}
