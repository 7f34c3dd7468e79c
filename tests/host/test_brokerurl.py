# Broker URLs, parsed in one place (host_tools/backend/brokerurl.py) for the SDK, provisioning
# and the CLI.
import pytest

from host_tools.backend import brokerurl
from host_tools.backend.sdk import MqttConfig
from host_tools.tech.provision import ProvisionError, broker_address


def test_a_url_without_a_port_takes_its_schemes():
    assert brokerurl.parse("mqtts://broker.example").port == 8883
    assert brokerurl.parse("mqtt://broker.example").port == 1883
    u = brokerurl.parse("mqtt://broker.example:1884")
    assert (u.scheme, u.host, u.port, u.tls) == ("mqtt", "broker.example", 1884, False)


def test_a_url_without_a_scheme_is_an_error_the_scheme_says_whether_tls_is_on():
    with pytest.raises(ValueError, match="needs its scheme"):
        brokerurl.parse("broker.example:1884")


def test_user_and_password_are_unquoted_and_never_public():
    u = brokerurl.parse("mqtts://backend%401:p%3Ass@[::1]:8883")
    assert (u.username, u.password, u.host, u.tls) == ("backend@1", "p:ss", "::1", True)
    assert u.public() == "mqtts://[::1]:8883"


@pytest.mark.parametrize("url, words", [
    ("http://broker", "scheme must be mqtt:// or mqtts://"), ("mqtt://", "has no host"),
    ("mqtt://broker:99999", "port must be a number 1..65535")])
def test_a_bad_url_is_one_clear_error_everywhere(url, words):
    with pytest.raises(ValueError, match=words):
        brokerurl.parse(url)
    with pytest.raises(ValueError, match=words):
        MqttConfig.from_url(url)
    with pytest.raises(ProvisionError, match=words):
        broker_address(url)

