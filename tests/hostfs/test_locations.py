"""hostfs.locations: cifs:// URLs, pool locations, path confinement."""

from __future__ import annotations

import ntpath
import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hyperv_agent.errors import BadStorageUrl, PathNotAllowed
from hyperv_agent.hostfs.images import ParentLocator
from hyperv_agent.hostfs.locations import (
    Credentials,
    LocalFolder,
    ShareLocation,
    confine,
    confine_absolute,
    details_credentials,
    from_primary_store,
    parse_cifs_url,
    same_folder,
)

SECRET = "1pass@word1"
SAMPLE_URL = "cifs://10.1.1.1/secondary?user=administrator&password=1pass%40word1"

# --- parse_cifs_url: accepted ------------------------------------------------------------


def test_sample_url_parses_when_password_is_percent_encoded() -> None:
    location = parse_cifs_url(SAMPLE_URL)
    assert (location.server, location.share, location.folder) == ("10.1.1.1", "secondary", "")
    assert location.credentials is not None
    assert location.credentials.user == "administrator"
    assert location.credentials.password == SECRET
    assert location.unc == "\\\\10.1.1.1\\secondary"


def test_password_is_hidden_when_location_is_printed() -> None:
    location = parse_cifs_url(SAMPLE_URL)
    for text in (repr(location), str(location), repr(location.credentials)):
        assert SECRET not in text and "1pass" not in text


@pytest.mark.parametrize(
    ("url", "server", "share", "folder", "unc"),
    [
        ("cifs://srv/share", "srv", "share", "", "\\\\srv\\share"),
        ("cifs://srv/share/", "srv", "share", "", "\\\\srv\\share"),
        ("smb://srv/share/dir/sub", "srv", "share", "dir\\sub", "\\\\srv\\share\\dir\\sub"),
        ("CIFS://srv/share/dir", "srv", "share", "dir", "\\\\srv\\share\\dir"),
        ("cifs://srv//share//dir/", "srv", "share", "dir", "\\\\srv\\share\\dir"),
        ("cifs://srv/my%20share/a%23b", "srv", "my share", "a#b", "\\\\srv\\my share\\a#b"),
        ("cifs://files.example.com/s", "files.example.com", "s", "", "\\\\files.example.com\\s"),
        ("cifs://srv/share\\dir", "srv", "share", "dir", "\\\\srv\\share\\dir"),
    ],
    ids=["bare", "trailing-slash", "smb-subfolder", "upper-scheme", "double-slashes",
         "escapes", "dns-name", "backslash"],
)
def test_location_parts_are_decoded_when_url_is_valid(
    url: str, server: str, share: str, folder: str, unc: str
) -> None:
    location = parse_cifs_url(url)
    assert (location.server, location.share, location.folder, location.unc) == (
        server, share, folder, unc)
    assert location.credentials is None


@pytest.mark.parametrize(
    ("query", "user", "domain", "password"),
    [
        ("user=u&password=p&domain=D", "u", "D", "p"),
        ("user=u&password=p", "u", "srv", "p"),
        ("user=u", "u", "srv", ""),
        ("USER=u&Password=p%2Bq+r&Domain=D", "u", "D", "p+q r"),
        ("user=u&password=p%40ss+word", "u", "srv", "p@ss word"),
        ("user=D%5Cu&password=p", "u", "D", "p"),
        ("password=a%3Db%26c&user=u&other=1", "u", "srv", "a=b&c"),
        ("user=u&password=p=q", "u", "srv", "p=q"),
        ("user=alice@corp.example&password=p&domain=null", "alice@corp.example", "", "p"),
        ("user=D%5Cu&password=p&domain=null", "u", "D", "p"),
    ],
    ids=["all", "domain-defaults-to-server", "no-password", "keys-any-case-plus-is-space",
         "as-java-urlencoder-writes-it",
         "domain-in-user", "escaped-separators", "raw-equals-in-value",
         "user-principal-name-has-no-domain", "domain-in-user-beside-null"],
)
def test_credentials_are_decoded_when_query_has_them(
    query: str, user: str, domain: str, password: str
) -> None:
    location = parse_cifs_url(f"cifs://srv/share?{query}")
    assert location.credentials == Credentials(user=user, domain=domain, password=password)


def test_credentials_are_none_when_query_has_no_user() -> None:
    assert parse_cifs_url("cifs://srv/share?domain=D&x=1").credentials is None
    assert parse_cifs_url("cifs://srv/share?").credentials is None


@pytest.mark.parametrize(("user", "domain", "qualified"), [
    ("alice@corp.example", "null", "alice@corp.example"),
    ("alice@corp.example", "", "alice@corp.example"),
    ("CORP\\alice", "null", "CORP\\alice"),
    ("alice", "null", "fs1\\alice"),
    ("alice", "CORP", "CORP\\alice"),
])
def test_the_details_account_logs_on_as_the_management_server_keeps_its_user(
    user: str, domain: str, qualified: str
) -> None:
    """The MS keeps ``user`` as the operator gave it: a user principal name logs on with no
    domain (the server's name would make it a local account of the file server)."""
    account = details_credentials({"user": user, "password": "p%2Bq", "domain": domain}, "fs1")
    assert account is not None and account.qualified_user == qualified
    assert account.password == "p+q"


def test_qualified_user_joins_domain_when_credentials_exist() -> None:
    assert Credentials("u", "D", "p").qualified_user == "D\\u"
    assert Credentials("u", "", "p").qualified_user == "u"


# --- parse_cifs_url: refused ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"nfs://srv/export?password={SECRET}", "SMB"),
        (f"http://srv/share?user=u&password={SECRET}", "not supported"),
        ("srv/share", "no scheme"),
        (f"cifs:///share?user=u&password={SECRET}", "no server"),
        (f"cifs://srv?user=u&password={SECRET}", "no share"),
        (f"cifs://srv/?user=u&password={SECRET}", "no share"),
        (f"cifs://srv/share/../other?user=u&password={SECRET}", "'..'"),
        (f"cifs://srv/share/%2E%2E?user=u&password={SECRET}", "'..'"),
        (f"cifs://srv/share/./x?user=u&password={SECRET}", "'.'"),
        (f"cifs://srv/share/a%2F..?user=u&password={SECRET}", "separator"),
        (f"cifs://srv/share/a%00b?user=u&password={SECRET}", "control"),
        (f"cifs://srv/share/a\nb?user=u&password={SECRET}", "control"),
        (f"cifs://srv/share/f.vhd%3Astream?user=u&password={SECRET}", "stream"),
        (f"cifs://srv/share/CON?user=u&password={SECRET}", "device"),
        (f"cifs://srv/share/dir/lpt9.log?user=u&password={SECRET}", "device"),
        (f"cifs://srv/nul.txt?user=u&password={SECRET}", "device"),
        (f"cifs://srv/share/a%3Cb?user=u&password={SECRET}", "forbids"),
        (f"cifs://srv/share/dir.?user=u&password={SECRET}", "dot or a space"),
        (f"cifs://srv/share?password={SECRET}", "no user"),
        (f"cifs://srv/share?user=&password={SECRET}", "no user"),
        (f"cifs://srv/share?user=u&password={SECRET}&password=x", "more than once"),
        (f"cifs://u:{SECRET}@srv/share", "before the host"),
        (f"cifs://srv:445/share?password={SECRET}", "port"),
        (f"cifs://[fe80::1]/share?password={SECRET}", "IPv6"),
        (f"cifs://sr v/share?user=u&password={SECRET}", "not a host name"),
        (f"cifs://srv/share?user=u%0A&password={SECRET}", "user contains a control"),
        (f"cifs://srv/share?user=u&password={SECRET}%0A", "password contains a control"),
        (f"cifs://srv/share?user=u&password={SECRET}%FF", "password"),
        (f"cifs://srv/share/%FF?user=u&password={SECRET}", "percent-encoded"),
    ],
    ids=["nfs", "http", "no-scheme", "no-server", "no-share", "empty-share", "dotdot",
         "escaped-dotdot", "dot", "escaped-slash", "nul-char", "newline", "stream",
         "con", "lpt9-ext", "nul-share", "forbidden-char", "trailing-dot", "password-no-user",
         "empty-user", "duplicate", "userinfo", "port", "ipv6", "space-in-host",
         "control-in-user", "control-in-password", "bad-utf8-password", "bad-utf8-path"],
)
def test_url_is_refused_without_leaking_password_when_unsafe(url: str, reason: str) -> None:
    with pytest.raises(BadStorageUrl) as caught:
        parse_cifs_url(url)
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message
    for text in (message, repr(caught.value)):
        assert SECRET not in text and "1pass" not in text
    assert caught.value.__cause__ is None


FLAWED_URLS = [
    "cifs://srv/share/CON?user=u&password={}",
    "cifs://srv/share?user=&password=x{}",
    "cifs://srv/share?user=u&password={}&password=x",
    "cifs://srv/share?user=u&password={}%0A",
    "cifs://srv/share?user=u&password={}%FF",
    "cifs://u:{}@srv/share",
    "nfs://srv/share?user=u&password={}",
]


@given(st.sampled_from(FLAWED_URLS),
       st.text(alphabet=string.ascii_letters + string.digits + "@%!#=:/?.", min_size=1))
def test_password_never_appears_in_error_when_url_is_flawed(pattern: str, password: str) -> None:
    secret = "Pw9" + password
    with pytest.raises(BadStorageUrl) as caught:
        parse_cifs_url(pattern.format(secret))
    assert secret not in str(caught.value) and secret not in repr(caught.value)


# --- from_primary_store -------------------------------------------------------------------


def test_smb_pool_becomes_unc_when_path_carries_credentials() -> None:
    location = from_primary_store("10.1.1.2", "/SMB-Share/primary?user=a&password=b&domain=D",
                                  "SMB")
    assert isinstance(location, ShareLocation)
    assert location.unc == "\\\\10.1.1.2\\SMB-Share\\primary"
    assert location.root == location.unc
    assert location.credentials == Credentials("a", "D", "b")


@pytest.mark.parametrize(
    ("host", "path", "pool_type", "expected"),
    [
        ("srv", "share/dir", "SMB", ShareLocation("srv", "share", "dir")),
        ("srv", "/share", "NetworkFilesystem", ShareLocation("srv", "share")),
        ("srv", "/share", "smb", ShareLocation("srv", "share")),
        ("10.1.1.1", "C:\\var\\test\\storagepool", "Filesystem",
         LocalFolder("C:\\var\\test\\storagepool")),
        ("h", "D:/pools/a/", "Filesystem", LocalFolder("D:\\pools\\a")),
        ("h", "E:\\", "Filesystem", LocalFolder("E:\\")),
        ("h", "\\\\nas\\vms\\pool", "Filesystem", ShareLocation("nas", "vms", "pool")),
    ],
    ids=["smb-no-leading-slash", "networkfilesystem-as-c#", "smb-lower", "filesystem-sample",
         "filesystem-forward-slashes", "filesystem-drive-root", "filesystem-unc"],
)
def test_pool_location_is_typed_when_pool_type_is_known(
    host: str, path: str, pool_type: str, expected: object
) -> None:
    assert from_primary_store(host, path, pool_type) == expected


@pytest.mark.parametrize(
    ("host", "path", "pool_type", "reason"),
    [
        ("h", ".\\Dummy", "Filesystem", "not an absolute"),
        ("h", "C:relative", "Filesystem", "not an absolute"),
        ("h", "C:\\pool\\..\\..\\x", "Filesystem", "climbs out"),
        ("h", "\\\\?\\C:\\pool", "Filesystem", "device namespace"),
        ("h", "C:\\pool\\NUL", "Filesystem", "device"),
        ("h", "/export", "NFS", "not supported"),
        ("", "/share?user=u&password=" + SECRET, "SMB", "no server"),
        ("srv/evil", "/share?user=u&password=" + SECRET, "SMB", "not a host name"),
        ("srv", "/share/../x?user=u&password=" + SECRET, "SMB", "'..'"),
    ],
    ids=["relative", "drive-relative", "climbs", "device-namespace", "device-name", "nfs",
         "no-host", "host-with-slash", "dotdot"],
)
def test_pool_is_refused_when_location_is_unusable(
    host: str, path: str, pool_type: str, reason: str
) -> None:
    with pytest.raises(BadStorageUrl) as caught:
        from_primary_store(host, path, pool_type)
    assert reason in str(caught.value)
    assert SECRET not in str(caught.value)


# --- confine: accepted ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("root", "relative", "expected"),
    [
        ("C:\\pool", "a.vhdx", "C:\\pool\\a.vhdx"),
        ("C:\\pool\\", "dir/sub/a.vhd", "C:\\pool\\dir\\sub\\a.vhd"),
        ("C:/pool", "dir\\a.vhd", "C:\\pool\\dir\\a.vhd"),
        ("C:\\", "a.vhd", "C:\\a.vhd"),
        ("\\\\srv\\share", "template/tmpl/2/201/x.vhd",
         "\\\\srv\\share\\template\\tmpl\\2\\201\\x.vhd"),
        ("\\\\srv\\share\\dir", "x", "\\\\srv\\share\\dir\\x"),
        ("//srv/share/dir", "./x", "\\\\srv\\share\\dir\\x"),
        ("C:\\pool", "a\\..\\b", "C:\\pool\\b"),
        ("C:\\pool", "a//b", "C:\\pool\\a\\b"),
        ("C:\\pool", "con-disk.vhd", "C:\\pool\\con-disk.vhd"),
        ("C:\\pool", "console.vhd", "C:\\pool\\console.vhd"),
        ("C:\\pool", "com10", "C:\\pool\\com10"),
        ("C:\\pool", "..a", "C:\\pool\\..a"),
        ("C:\\pool", "dir/", "C:\\pool\\dir"),
    ],
    ids=["file", "subdirs", "slash-root", "drive-root", "unc-template", "unc-dir",
         "forward-unc-root", "dotdot-inside", "double-sep", "con-prefix", "console",
         "com10", "leading-dots", "trailing-sep"],
)
def test_path_is_joined_when_relative_stays_inside(root: str, relative: str,
                                                   expected: str) -> None:
    assert confine(root, relative) == expected


# --- confine: refused ----------------------------------------------------------------------


REFUSED_RELATIVE = [
    ("..", "climbs out"),
    ("..\\x", "climbs out"),
    ("a/../../x", "climbs out"),
    ("C:\\x", "absolute"),
    ("c:x", "absolute"),
    ("\\x", "absolute"),
    ("/x", "absolute"),
    ("\\\\other\\share\\x", "absolute"),
    ("\\\\?\\C:\\x", "absolute"),
    ("//server/share", "absolute"),
    ("file.vhd:stream", "stream"),
    ("file.vhd::$DATA", "stream"),
    ("NUL", "device"),
    ("com1.txt", "device"),
    ("dir/LPT3", "device"),
    ("Aux .vhd", "device"),
    ("CONOUT$", "device"),
    ("pool\\..\\ ", "dot or a space"),
    ("x.vhd.", "dot or a space"),
    ("x.vhd ", "dot or a space"),
    ("...", "dot or a space"),
    (".. ", "dot or a space"),
    ("", "empty"),
    ("   ", "empty"),
    (".", "root itself"),
    ("a/..", "root itself"),
    ("a<b", "forbids"),
    ("a>b", "forbids"),
    ('a"b', "forbids"),
    ("a|b", "forbids"),
    ("a?b", "forbids"),
    ("*.vhd", "forbids"),
    ("a\x00b", "control"),
    ("a\x1fb", "control"),
    ("a\nb", "control"),
    ("\u202evm.vhdx", "invisible control or formatting"),  # right-to-left override
    ("a\u200bb.vhdx", "invisible control or formatting"),  # zero-width space
    ("a\x85b", "invisible control or formatting"),  # a C1 control
    ("x" * 256, "longer than"),
    ("PROGRA~1\\x.vhd", "8.3 short name"),
    ("13131~1.VHD", "8.3 short name"),
]


@pytest.mark.parametrize("root", ["C:\\pool", "\\\\srv\\share\\dir"], ids=["drive", "unc"])
@pytest.mark.parametrize(("relative", "reason"), REFUSED_RELATIVE,
                         ids=[repr(r)[:30] for r, _ in REFUSED_RELATIVE])
def test_path_is_refused_when_relative_escapes_or_is_unsafe(
    root: str, relative: str, reason: str
) -> None:
    with pytest.raises(PathNotAllowed) as caught:
        confine(root, relative)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "root",
    ["pool", "C:pool", "\\pool", "\\\\srv", "\\\\srv\\", "\\\\?\\C:\\pool", "\\\\.\\pipe\\x",
     "C:\\pool\\nul", "C:\\..\\x", ""],
    ids=["relative", "drive-relative", "rooted", "server-only", "empty-share",
         "long-prefix", "device-namespace", "device", "climbs", "empty"],
)
def test_path_is_refused_when_root_is_not_absolute_and_safe(root: str) -> None:
    with pytest.raises(PathNotAllowed):
        confine(root, "x")


# --- confine_absolute ------------------------------------------------------------------------


def test_names_are_compared_as_windows_compares_them_not_by_casefold() -> None:
    """Windows upper-cases each character by itself: STRAßE is Straße, STRASSE is another
    folder (casefold would call it the same)."""
    assert confine_absolute("C:\\Straße", "c:\\STRAßE\\a.vhd") == "C:\\Straße\\a.vhd"
    with pytest.raises(PathNotAllowed, match="outside"):
        confine_absolute("C:\\Straße", "C:\\STRASSE\\a.vhd")
    assert not same_folder("C:\\Straße", "C:\\strasse")
    assert same_folder("\\\\srv\\Σχολή", "\\\\SRV\\σχολή")


@pytest.mark.parametrize(
    ("root", "path", "expected"),
    [
        ("C:\\pool", "C:\\pool\\a.vhd", "C:\\pool\\a.vhd"),
        ("C:\\Pool", "c:/POOL/Dir/a.vhd", "C:\\Pool\\Dir\\a.vhd"),
        ("C:\\pool\\", "C:\\pool\\x\\..\\y", "C:\\pool\\y"),
        ("\\\\SRV\\Share", "\\\\srv\\share\\dir\\a.vhdx", "\\\\SRV\\Share\\dir\\a.vhdx"),
        ("C:\\", "c:\\a", "C:\\a"),
        ("C:\\pool", "C:\\other\\..\\pool\\a", "C:\\pool\\a"),
    ],
    ids=["same-case", "case-and-slashes", "dotdot-inside", "unc", "drive-root",
         "lexical-detour"],
)
def test_absolute_path_is_kept_when_inside_root(root: str, path: str, expected: str) -> None:
    assert confine_absolute(root, path) == expected


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("C:\\pool2\\a.vhd", "outside"),
        ("C:\\poolx", "outside"),
        ("C:\\pool", "outside"),
        ("C:\\", "outside"),
        ("D:\\pool\\a.vhd", "outside"),
        ("C:\\pool\\..\\x", "outside"),
        ("C:\\pool\\..\\..\\..\\x", "climbs out"),
        ("\\\\srv\\share\\pool\\a", "outside"),
        ("\\\\?\\C:\\pool\\a", "device namespace"),
        ("\\\\.\\C:\\pool\\a", "device namespace"),
        ("C:pool\\a", "not an absolute"),
        ("pool\\a", "not an absolute"),
        ("\\pool\\a", "not an absolute"),
        ("C:\\pool\\a.vhd:ads", "stream"),
        ("C:\\pool\\com1", "device"),
        ("C:\\pool\\a.vhd.", "dot or a space"),
        ("C:\\pool\\a|b", "forbids"),
        ("C:\\pool\\13131~1.VHD", "8.3 short name"),
    ],
    ids=["sibling-prefix", "prefix-no-sep", "root-itself", "drive-root", "other-drive",
         "dotdot-out", "climbs-above-drive", "unc-elsewhere", "long-prefix", "device-ns",
         "drive-relative", "relative", "rooted", "stream", "device", "trailing-dot",
         "forbidden", "short-name"],
)
def test_absolute_path_is_refused_when_outside_root_or_unsafe(path: str, reason: str) -> None:
    with pytest.raises(PathNotAllowed) as caught:
        confine_absolute("C:\\pool", path)
    assert reason in str(caught.value)


# --- confine: properties -------------------------------------------------------------------

DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{port}{n}" for port in ("COM", "LPT") for n in range(1, 10)
}
SAFE_CHARS = string.ascii_letters + string.digits + " -_.+=,;@#$%&()[]{}'~!"
safe_segment = (
    st.text(alphabet=SAFE_CHARS, min_size=1, max_size=12)
    .filter(lambda s: s not in (".", "..") and not s.endswith((".", " ")))
    .filter(lambda s: s.split(".")[0].rstrip(" ").upper() not in DEVICES)
    .filter(lambda s: "~" not in s)  # NAME~1 is an 8.3 alias, refused as such
)
ROOTS = st.sampled_from(
    ["C:\\pool", "c:\\", "D:\\a b\\pool", "\\\\srv\\share", "\\\\srv\\share\\d"]
)


def _inside(root: str, result: str) -> bool:
    prefix = root if root.endswith("\\") else root + "\\"
    return result.casefold().startswith(prefix.casefold()) and len(result) > len(prefix)


@given(ROOTS, st.lists(safe_segment, min_size=1, max_size=6), st.sampled_from(["\\", "/"]))
def test_result_starts_with_root_when_segments_are_safe(
    root: str, segments: list[str], separator: str
) -> None:
    result = confine(root, separator.join(segments))
    assert _inside(root, result)
    assert result == ntpath.join(root, *segments)


hostile_piece = st.sampled_from(
    ["..", ".", "\\", "/", "C:", "c:\\", "\\\\", "\\\\?\\", "\\\\.\\", "//", "\\\\other\\s",
     ":", "::$DATA", " ", ".. ", "...", "nul", "CON.txt", "\x00", "a", "b.vhd", "pool"]
)
hostile_path = st.lists(st.one_of(hostile_piece, safe_segment), min_size=1, max_size=8).map(
    "".join
)


@given(ROOTS, hostile_path)
@example("C:\\pool", "a\\..\\..\\pool2\\x")
@example("C:\\pool", "..\\pool\\x")
@example("\\\\srv\\share", "\\\\srv\\share\\x")
def test_result_stays_inside_root_when_path_is_hostile(root: str, relative: str) -> None:
    try:
        result = confine(root, relative)
    except PathNotAllowed:
        return
    assert _inside(root, result)
    assert ".." not in result[len(root):].split("\\")


@given(st.sampled_from(["C:\\pool", "\\\\srv\\share\\d"]), hostile_path)
def test_absolute_result_stays_inside_root_when_path_is_hostile(root: str, path: str) -> None:
    for candidate in (path, root + "\\" + path, "C:\\" + path):
        try:
            result = confine_absolute(root, candidate)
        except PathNotAllowed:
            continue
        assert _inside(root, result)


@pytest.mark.parametrize(("locator", "child", "named"), [
    (ParentLocator(absolute="C:\\Pool\\T.VHDX"), "C:\\pool\\c.vhdx", True),
    (ParentLocator(absolute="\\\\?\\c:\\pool\\.\\t.vhdx"), "C:\\pool\\c.vhdx", True),
    (ParentLocator(absolute="C:\\pool\\t2.vhdx"), "C:\\pool\\c.vhdx", False),
    (ParentLocator(relative=".\\t.vhdx"), "C:\\pool\\c.vhdx", True),
    (ParentLocator(relative="..\\pool\\T.vhdx"), "C:\\pool\\c.vhdx", True),
    (ParentLocator(relative=".\\t.vhdx"), "C:\\other\\c.vhdx", False),
    (ParentLocator(volume="\\\\?\\Volume{1b2c}\\pool\\t.vhdx"), "C:\\pool\\c.vhdx", True),
    (ParentLocator(volume="\\\\?\\Volume{1b2c}\\other\\t.vhdx"), "C:\\pool\\c.vhdx", False),
    (ParentLocator(), "C:\\pool\\c.vhdx", False),
])
def test_a_parent_locator_names_a_file_as_windows_resolves_it(
    locator: ParentLocator, child: str, named: bool
) -> None:
    assert locator.names(child, "C:\\pool\\t.vhdx") is named


def test_a_parent_locator_names_a_file_on_a_share_by_its_long_form() -> None:
    locator = ParentLocator(absolute="\\\\?\\UNC\\10.1.1.1\\Primary\\t.vhdx")
    assert locator.names("\\\\10.1.1.1\\primary\\c.vhdx", "\\\\10.1.1.1\\primary\\t.vhdx")
    assert not locator.names("\\\\10.1.1.1\\primary\\c.vhdx", "\\\\10.1.1.2\\primary\\t.vhdx")


def test_a_name_with_a_tilde_that_is_no_8_3_alias_is_kept() -> None:
    """Only the 8.3 form is refused: a long name may hold ~ and digits."""
    for name in ("a~1.vhdx", "backup~1.tar.gz", "template~1234567", "ABCDEFG~1"):
        assert confine("C:\\pool", name) == f"C:\\pool\\{name}"
    with pytest.raises(PathNotAllowed, match=r"8\.3 short name"):
        confine("C:\\PROGRA~1\\pool", "x.vhd")  # a root, too


def test_a_details_password_that_is_no_utf8_names_the_details_not_a_url() -> None:
    with pytest.raises(BadStorageUrl) as refused:
        details_credentials({"user": "u", "password": "s3%FFcret"}, "fs1")
    assert str(refused.value) == ("pool details: the 'password' value is not valid "
                                  "percent-encoded UTF-8")


def test_a_percent_that_starts_no_escape_stays_as_written() -> None:
    """Leniently, as the SSVM's URLEncodedUtils and the C# agent's UrlDecode read it: the
    file server then judges the password."""
    account = details_credentials({"user": "u", "password": "a%zz+b"}, "fs1")
    assert account is not None and account.password == "a%zz b"
