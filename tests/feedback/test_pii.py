from feedback import pii


def kinds(text):
    return [m.kind for m in pii.find_pii(text)]


def test_finds_each_kind():
    assert kinds("write to jane.doe@example.com today") == ["email"]
    assert kinds("card 4111 1111 1111 1111 exp 12/29") == ["card"]
    assert kinds("call +44 20 7946 0958 please") == ["phone"]
    assert kinds("server at 192.168.10.4 is down") == ["ip"]
    assert kinds("v6 2001:db8:85a3::8a2e:370:7334 ok") == ["ip"]
    assert kinds("2001:0db8:85a3:0000:0000:8a2e:0370:7334") == ["ip"]
    assert kinds("IBAN DE89 3704 0044 0532 0130 00") == ["iban"]
    assert kinds("ssn 123-45-6789") == ["ssn"]


def test_no_false_positives_on_ordinary_text():
    assert kinds("In 1969, 3 astronauts flew 384400 km. Version 2.13.0 is out.") == []
    assert kinds("card-like 1234 5678 9012 3456 fails Luhn") == []
    assert kinds("999.1.1.1 is not an address") == []
    assert kinds("the time is 10:30:15 now") == []


def test_redact_replaces_spans():
    assert pii.redact("mail a@b.io or call 555-123-4567") == "mail [EMAIL] or call [PHONE]"


def test_normalised_hash_ignores_case_and_spacing():
    a = [{"role": "user", "content": "What  is\tPython?"}]
    b = [{"role": "user", "content": "what is python?"}]
    assert pii.messages_hash(a) == pii.messages_hash(b)
    assert pii.messages_hash(a) != pii.messages_hash([{"role": "system", "content": "what is python?"}])


def test_storable_text_replaces_nul_only():
    assert pii.storable_text("a\x00b") == "a\ufffdb"
    assert pii.storable_text("plain") == "plain"
