"""Green Button (ESPI Atom) reader: the shared real feeds, the packaged sample, mapping rules."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from eap.node.errors import InvalidArgument
from eap.node.meters import (
    CsvMeterSource,
    GreenButtonSource,
    MeterReadings,
    ReadingKind,
    ReadOptions,
    read_meter_file,
    sample_greenbutton_path,
)

SHARED = Path(__file__).parents[1].parent / "shared" / "data" / "greenbutton"
#: The small feeds are the project's own fixtures (tests/data/README.md); only the year files
#: stay in the shared data.
LOCAL = Path(__file__).parent / "data" / "greenbutton"
ESPI = "http://naesb.org/espi"
BASE = "https://services.greenbuttondata.org/DataCustodian/espi/1_1/resource"
UP2 = f"{BASE}/RetailCustomer/2/UsagePoint/2"  # the usage point of the packaged sample
YEAR_FILES = (
    "Coastal_Multi_Family_Jan_1_2011_to_Jan_1_2012_RetailCustomer_5.xml",
    "Desert_Single_Family_Jan_1_2011_to_Jan_1_2012_RetailCustomer_7.xml",
)
_READING = re.compile(
    r"<timePeriod>\s*<duration>(\d+)</duration>\s*<start>(\d+)</start>\s*(?:<!--.*?-->\s*)?"
    r"</timePeriod>\s*"
    r"<value>(-?\d+)</value>"
)


def shared(name: str) -> Path:
    path = LOCAL / name if (LOCAL / name).is_file() else SHARED / name
    if not path.is_file():
        pytest.skip(f"shared test data absent: {path} (see the project README on ../shared/data)")
    return path


def regex_readings(path: Path) -> list[tuple[int, int, int]]:
    """(start, duration, value) of every IntervalReading, found without an XML parser."""
    text = path.read_text(encoding="utf-8")
    return [(int(s), int(d), int(v)) for d, s, v in _READING.findall(text)]


def read(path: Path, **opts) -> MeterReadings:
    return GreenButtonSource().read(path, options=ReadOptions(**opts))


def fails(path: Path, **opts) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as e:
        read(path, **opts)
    return e.value


# -- the shared real feeds --------------------------------------------------------------------


@pytest.mark.parametrize("name", YEAR_FILES)
def test_year_long_feeds(name: str) -> None:
    path = shared(name)
    expected = regex_readings(path)
    r = read(path)
    assert len(r) == len(expected) == 8760
    assert r.total_wh() == sum(v for _, _, v in expected)
    assert [(x.interval_start, x.interval_end - x.interval_start, x.wh) for x in r] == sorted(
        expected
    )
    customer = re.search(r"RetailCustomer_(\d+)", name).group(1)
    meter = f"{BASE}/RetailCustomer/{customer}/UsagePoint/1"
    assert r.meters == (meter,)
    assert r.per_meter() == {meter: (8760, r.total_wh())}
    assert r.kind is ReadingKind.CONSUMPTION
    assert r.notes == ()
    # one year of consecutive hours from 2011-01-01T08:00Z (midnight Pacific)
    assert (r.interval_start[1:] == r.interval_end[:-1]).all()
    assert (r.summary().first_start, r.summary().last_end) == (1_293_868_800, 1_325_404_800)


def test_year_long_totals_are_the_known_figures() -> None:
    totals = [read(shared(name)).total_wh() for name in YEAR_FILES]
    assert totals == [4_425_305, 12_397_107]


def test_nine_day_binned_daily_feed() -> None:
    path = shared("TestGBDataHourlyNineDaysBinnedDaily.xml")
    r = read(path)
    assert len(r) == 216
    # the feed's own usage summary states the consumption of the nine days
    root = ET.parse(path).getroot()
    stated = root.find(f".//{{{ESPI}}}overallConsumptionLastPeriod/{{{ESPI}}}value").text
    assert r.total_wh() == int(stated) == 199_563
    # hourly readings binned in nine daily IntervalBlocks: 24 per block
    blocks = root.findall(f".//{{{ESPI}}}IntervalBlock/{{{ESPI}}}interval")
    assert len(blocks) == 9
    for interval in blocks:
        start = int(interval.findtext(f"{{{ESPI}}}start"))
        duration = int(interval.findtext(f"{{{ESPI}}}duration"))
        assert duration == 86_400
        assert len(r.between(start, start + duration)) == 24
    assert r.notes == ()


def test_containerized_abridged_feed() -> None:
    r = read(shared("electric_containerized.xml"))
    assert len(r) == 8
    assert r.total_wh() == 4086
    assert r.meters == (f"{BASE}/RetailCustomer/3/UsagePoint/1",)


def test_gas_feed_is_rejected() -> None:
    path = shared("gas_direct.xml")
    assert GreenButtonSource().sniff(path)
    err = fails(path)
    assert "no electricity usage point" in err.message
    assert [v.field for v in err.violations] == ["entry[0].UsagePoint.ServiceCategory.kind"]
    assert "1 (gas) is not electricity" in err.violations[0].description
    with pytest.raises(InvalidArgument):
        read(path, kind="production")


def test_every_shared_feed_is_sniffed_by_greenbutton_only() -> None:
    for name in [
        *YEAR_FILES,
        "TestGBDataHourlyNineDaysBinnedDaily.xml",
        "electric_containerized.xml",
    ]:
        path = shared(name)
        assert GreenButtonSource().sniff(path)
        assert not CsvMeterSource().sniff(path)


# -- the packaged sample ---------------------------------------------------------------------


def test_packaged_sample() -> None:
    path = sample_greenbutton_path()
    assert path.is_file()
    assert path.stat().st_size < 50_000
    r = read_meter_file(path)
    assert len(r) == 72
    assert r.total_wh() == 64_155
    assert r.meters == (UP2,)
    assert (r.summary().first_start, r.summary().last_end) == (1_388_552_400, 1_388_811_600)


def test_packaged_sample_is_the_start_of_the_nine_day_feed() -> None:
    nine = read(shared("TestGBDataHourlyNineDaysBinnedDaily.xml"))
    sample = read(sample_greenbutton_path())
    assert list(sample.rows()) == list(nine[:72].rows())


# -- mapping rules, on variants of the packaged sample and on small synthetic feeds -----------


def variant(tmp_path: Path, *edits: tuple[str, str], extra: str = "", name: str = "v.xml") -> Path:
    """The packaged sample with each edit applied to its first occurrence, entries appended."""
    text = sample_greenbutton_path().read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / name
    path.write_text(text.replace("</feed>", extra + "</feed>"), encoding="utf-8")
    return path


def entry(self_href: str, content: str, *, up: str | None = None, related: tuple = ()) -> str:
    links = [f'<link rel="self" href="{self_href}"/>']
    if up:
        links.append(f'<link rel="up" href="{up}"/>')
    links += [f'<link rel="related" href="{h}"/>' for h in related]
    return f"<entry><id>urn:x:{self_href}</id>{''.join(links)}<content>{content}</content></entry>"


def espi(tag: str, inner: str) -> str:
    return f'<{tag} xmlns="{ESPI}">{inner}</{tag}>'


def usage_point(kind: int) -> str:
    return espi("UsagePoint", f"<ServiceCategory><kind>{kind}</kind></ServiceCategory>")


def reading_type(flow: int | None = 1, uom: int = 72, power: int = 0) -> str:
    flow_xml = f"<flowDirection>{flow}</flowDirection>" if flow is not None else ""
    return espi(
        "ReadingType",
        f"<accumulationBehaviour>4</accumulationBehaviour>{flow_xml}"
        f"<powerOfTenMultiplier>{power}</powerOfTenMultiplier><uom>{uom}</uom>",
    )


def block(*readings: tuple[int, int, int]) -> str:
    body = "".join(
        f"<IntervalReading><timePeriod><duration>{d}</duration><start>{s}</start></timePeriod>"
        f"<value>{v}</value></IntervalReading>"
        for s, d, v in readings
    )
    return espi("IntervalBlock", body)


def feed(tmp_path: Path, *entries: str, name: str = "f.xml") -> Path:
    path = tmp_path / name
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        f"<id>urn:x:feed</id>{''.join(entries)}</feed>\n",
        encoding="utf-8",
    )
    return path


def second_meter_reading(rt: str, readings: tuple, mr: str = "02", rt_no: int = 4) -> str:
    """A MeterReading of the sample's usage point, containerized style."""
    base = f"{UP2}/MeterReading/{mr}"
    return (
        entry(base, espi("MeterReading", ""), up=f"{UP2}/MeterReading",
              related=(f"{base}/IntervalBlock", f"{BASE}/ReadingType/{rt_no}"))
        + entry(f"{BASE}/ReadingType/{rt_no}", rt, up=f"{BASE}/ReadingType")
        + entry(f"{base}/IntervalBlock/1", block(*readings), up=f"{base}/IntervalBlock")
    )  # fmt: skip


T0 = 1_388_552_400  # first hour of the sample


def test_direct_links_style(tmp_path: Path) -> None:
    # the utility batch style of gas_direct.xml: related hrefs name the child entries directly
    path = feed(
        tmp_path,
        entry("/v1/UP/9", usage_point(0), related=("/v1/UP/9/MR/1",)),
        entry("/v1/UP/9/MR/1", espi("MeterReading", ""), related=("/v1/RT/0", "/v1/IB/1")),
        entry("/v1/RT/0", reading_type(flow=19, power=-3)),
        entry(
            "/v1/IB/1", block((T0, 3600, 37_000), (T0 + 3600, 3600, 14_250), (T0 + 7200, 900, 9))
        ),
    )
    r = read(path)
    assert r.kind is ReadingKind.PRODUCTION
    assert r.meters == ("/v1/UP/9",)
    assert [x.wh for x in r] == [37, 14, 0]  # 10^-3 Wh rounded down to whole Wh
    assert len(r.notes) == 1
    assert r.notes[0].count == 2
    assert "rounded down (259 x 10^-3 Wh in total)" in r.notes[0].reason


def test_hierarchical_href_fallback(tmp_path: Path) -> None:
    # no related/up links at all: children are found under their parent's self href
    path = feed(
        tmp_path,
        entry("/r/UsagePoint/1", usage_point(0)),
        entry("/r/UsagePoint/1/MeterReading/1", espi("MeterReading", ""), related=("/r/RT/1",)),
        entry("/r/RT/1", reading_type()),
        entry("/r/UsagePoint/1/MeterReading/1/IntervalBlock/1", block((T0, 3600, 5))),
    )
    assert [tuple(x) for x in read(path)] == [("/r/UsagePoint/1", T0, T0 + 3600, 5)]


def test_mixed_feed_skips_gas_and_reports_it(tmp_path: Path) -> None:
    path = feed(
        tmp_path,
        entry("/v1/UP/gas", usage_point(1), related=("/v1/UP/gas/MR/1",)),
        entry("/v1/UP/gas/MR/1", espi("MeterReading", ""), related=("/v1/RT/g", "/v1/IB/g")),
        entry("/v1/RT/g", reading_type(uom=169, power=-3)),
        entry("/v1/IB/g", block((T0, 3600, 5000), (T0 + 3600, 3600, 7000))),
        entry("/v1/UP/el", usage_point(0), related=("/v1/UP/el/MR/1",)),
        entry("/v1/UP/el/MR/1", espi("MeterReading", ""), related=("/v1/RT/e", "/v1/IB/e")),
        entry("/v1/RT/e", reading_type()),
        entry("/v1/IB/e", block((T0, 3600, 11))),
    )
    r = read(path)
    assert [tuple(x) for x in r] == [("/v1/UP/el", T0, T0 + 3600, 11)]
    [note] = r.notes
    assert note.where == "entry[0].UsagePoint"
    assert note.count == 2
    assert "/v1/UP/gas" in note.reason
    assert "1 (gas) is not electricity" in note.reason


def test_gas_only_synthetic_feed_is_rejected_even_with_wh_units(tmp_path: Path) -> None:
    path = feed(
        tmp_path,
        entry("/v1/UP/gas", usage_point(1), related=("/v1/UP/gas/MR/1",)),
        entry("/v1/UP/gas/MR/1", espi("MeterReading", ""), related=("/v1/RT/g", "/v1/IB/g")),
        entry("/v1/RT/g", reading_type()),  # even if it claims Wh
        entry("/v1/IB/g", block((T0, 3600, 5000))),
    )
    err = fails(path)
    assert "no electricity usage point" in err.message


def test_production_flow_direction(tmp_path: Path) -> None:
    path = variant(
        tmp_path, ("<flowDirection>1</flowDirection>", "<flowDirection>19</flowDirection>")
    )
    r = read(path)
    assert r.kind is ReadingKind.PRODUCTION
    assert len(r) == 72
    assert len(fails(path, kind="consumption").violations) >= 1


def test_missing_flow_direction_means_consumption(tmp_path: Path) -> None:
    path = variant(tmp_path, ("<flowDirection>1</flowDirection>", ""))
    assert read(path).kind is ReadingKind.CONSUMPTION


def test_both_kinds_need_a_choice(tmp_path: Path) -> None:
    hourly = tuple((T0 + i * 3600, 3600, 100 + i) for i in range(5))
    path = variant(tmp_path, extra=second_meter_reading(reading_type(flow=19), hourly))
    err = fails(path)
    assert "both production and consumption" in err.message
    assert err.violations[0].field == "kind"
    prod = read(path, kind="production")
    assert prod.kind is ReadingKind.PRODUCTION
    assert [x.wh for x in prod] == [100, 101, 102, 103, 104]
    assert [(n.count, "consumption readings") for n in prod.notes] == [(72, "consumption readings")]
    assert "consumption readings" in prod.notes[0].reason
    cons = read(path, kind="consumption")
    assert len(cons) == 72
    assert cons.notes[0].count == 5


def test_positive_multiplier(tmp_path: Path) -> None:
    path = variant(tmp_path, ("<powerOfTenMultiplier>0<", "<powerOfTenMultiplier>3<"))
    assert read(path).total_wh() == 64_155_000


def test_negative_multiplier_rounds_down_and_reports(tmp_path: Path) -> None:
    path = variant(tmp_path, ("<powerOfTenMultiplier>0<", "<powerOfTenMultiplier>-1<"))
    values = [v for _, _, v in regex_readings(sample_greenbutton_path())]
    r = read(path)
    assert [x.wh for x in r] == [v // 10 for v in values]
    dropped = sum(v % 10 for v in values)
    assert sum(n.count for n in r.notes) == sum(1 for v in values if v % 10)
    assert sum(int(re.search(r"\((\d+) x", n.reason).group(1)) for n in r.notes) == dropped


def test_readings_longer_than_an_hour_are_skipped_and_reported(tmp_path: Path) -> None:
    daily = ((T0, 86_400, 21_000), (T0 + 86_400, 86_400, 22_000), (T0 + 3 * 86_400, 3600, 5))
    path = variant(tmp_path, extra=second_meter_reading(reading_type(), daily))
    r = read(path)
    assert len(r) == 73  # the 72 hours of the sample and the one hourly reading of the new block
    assert r.total_wh() == 64_155 + 5
    [note] = r.notes
    assert note.where == "entry[9].IntervalBlock[0]"
    assert note.count == 2
    assert "longer than 1 h (86400 s)" in note.reason


def test_only_daily_readings_is_an_error(tmp_path: Path) -> None:
    path = feed(
        tmp_path,
        entry("/u/1", usage_point(0), related=("/u/1/m",)),
        entry("/u/1/m", espi("MeterReading", ""), related=("/rt", "/u/1/m/b")),
        entry("/rt", reading_type()),
        entry("/u/1/m/b", block((T0, 86_400, 21_000))),
    )
    err = fails(path)
    assert "no usable consumption readings" in err.message
    assert "longer than 1 h" in err.violations[0].description


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (("<uom>72</uom>", "<uom>38</uom>"), "uom 38 is not Wh"),
        (("<commodity>1<", "<commodity>7<"), "commodity 7 is not electricity"),
        (("<accumulationBehaviour>4<", "<accumulationBehaviour>1<"), "not delta data"),
        (("<flowDirection>1<", "<flowDirection>4<"), "flowDirection 4"),
        (("<powerOfTenMultiplier>0<", "<powerOfTenMultiplier>15<"), "outside -12..12"),
    ],
)  # fmt: skip
def test_unusable_reading_types_are_reported(tmp_path: Path, edit, words: str) -> None:
    err = fails(variant(tmp_path, edit))
    assert "no usable consumption readings" in err.message
    assert err.violations[0].field == "entry[2].MeterReading"
    assert words in err.violations[0].description
    assert "(72)" in err.violations[0].description


def test_negative_value_is_a_violation(tmp_path: Path) -> None:
    path = variant(tmp_path, ("<value>273</value>", "<value>-273</value>"))
    err = fails(path)
    [v] = err.violations
    assert v.field == "entry[4].IntervalBlock[0].IntervalReading[0].value"
    assert "cannot be negative" in v.description


def test_non_integer_and_missing_fields(tmp_path: Path) -> None:
    path = variant(
        tmp_path,
        ("<value>273</value>", "<value>27.3</value>"),
        ("<start>1388556000</start>", "<start>soon</start>"),
    )
    err = fails(path)
    assert [v.field for v in err.violations] == [
        "entry[4].IntervalBlock[0].IntervalReading[0].value",
        "entry[4].IntervalBlock[0].IntervalReading[1].timePeriod.start",
    ]
    path = feed(
        tmp_path,
        entry("/u/1", usage_point(0), related=("/u/1/m",)),
        entry("/u/1/m", espi("MeterReading", ""), related=("/rt", "/u/1/m/b")),
        entry("/rt", reading_type()),
        entry(
            "/u/1/m/b", espi("IntervalBlock", "<IntervalReading><value>3</value></IntervalReading>")
        ),
    )
    assert [v.field for v in fails(path).violations] == [
        "entry[3].IntervalBlock[0].IntervalReading[0].timePeriod"
    ]


def test_exact_duplicate_blocks_are_kept_once(tmp_path: Path) -> None:
    hourly = ((T0, 3600, 273),)  # the sample's first hour, again
    path = variant(tmp_path, extra=second_meter_reading(reading_type(), hourly))
    r = read(path)
    assert len(r) == 72
    assert [(n.count, n.reason) for n in r.notes] == [
        (1, "exact duplicate IntervalReadings kept once")
    ]


def test_conflicting_and_overlapping_readings_are_violations(tmp_path: Path) -> None:
    clash = ((T0, 3600, 275), (T0 + 1800, 3600, 1))
    path = variant(tmp_path, extra=second_meter_reading(reading_type(), clash))
    err = fails(path)
    fields = [v.field for v in err.violations]
    descriptions = [v.description for v in err.violations]
    assert fields[0] == "entry[9].IntervalBlock[0].IntervalReading[0].value"
    assert "275 Wh conflicts with 273 Wh" in descriptions[0]
    assert "entry[4].IntervalBlock[0].IntervalReading[0]" in descriptions[0]
    assert any("overlaps" in d for d in descriptions)


def test_unlinked_block_is_reported(tmp_path: Path) -> None:
    extra = entry("/elsewhere/IntervalBlock/1", block((T0, 3600, 5)), up="/elsewhere/IntervalBlock")
    r = read(variant(tmp_path, extra=extra))
    assert len(r) == 72
    [note] = r.notes
    assert (note.where, note.count) == ("entry[7].IntervalBlock[0]", 1)
    assert "not linked" in note.reason


def test_malformed_xml_and_wrong_documents(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text(sample_greenbutton_path().read_text()[:20_000])
    err = fails(bad)
    assert err.violations[0].field.startswith("line ")
    assert "malformed XML" in err.violations[0].description
    other = tmp_path / "other.xml"
    other.write_text(f'<UsagePoint xmlns="{ESPI}"/>')
    assert fails(other).violations[0].field == "feed"
    assert not GreenButtonSource().sniff(other)
    empty_feed = feed(tmp_path, name="empty.xml")
    assert "no UsagePoint" in fails(empty_feed).violations[0].description


def test_doctype_and_empty_documents_are_rejected(tmp_path: Path) -> None:
    laughs = tmp_path / "laughs.xml"
    laughs.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE feed [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n'
        f'<feed xmlns="http://www.w3.org/2005/Atom"><title>&b;</title>{usage_point(0)}</feed>'
    )
    err = fails(laughs)
    assert [v.field for v in err.violations] == ["feed"]
    assert "DOCTYPE" in err.violations[0].description
    empty = tmp_path / "empty.xml"
    empty.write_bytes(b"")
    assert "malformed XML" in fails(empty).violations[0].description


def test_feed_without_readings_is_empty_not_an_error(tmp_path: Path) -> None:
    path = feed(tmp_path, entry("/u/1", usage_point(0)))
    r = read(path)
    assert len(r) == 0
    assert r.notes == ()


def test_violations_are_capped(tmp_path: Path) -> None:
    path = variant(tmp_path, *[("<value>273</value>", "<value>-273</value>")] * 2)
    assert len(fails(path).violations) == 2
    err = fails(path, max_violations=1)
    assert len(err.violations) == 1
    assert "stopped after 1 violations" in err.message


# -- recognising a feed by parsing, whatever its prefixes ----------------------------------------


def prefixed(source: Path, dest: Path) -> Path:
    """``source`` rewritten with ``atom:`` and ``espi:`` prefixes (as XML tools write feeds)."""
    ET.register_namespace("atom", "http://www.w3.org/2005/Atom")
    ET.register_namespace("espi", ESPI)
    tree = ET.parse(source)
    tree.write(dest, encoding="utf-8", xml_declaration=True)
    head = dest.read_bytes()[:4096]
    assert b"<atom:feed" in head and b"<feed" not in head
    return dest


@pytest.mark.parametrize("name", ["electric_containerized.xml", YEAR_FILES[0]])
def test_prefixed_feed_is_recognised_and_read_alike(tmp_path: Path, name: str) -> None:
    path = shared(name)
    atom = prefixed(path, tmp_path / "prefixed.xml")
    assert GreenButtonSource().sniff(atom)
    got, want = read_meter_file(atom), read(path)
    assert got.meters == want.meters
    assert [tuple(x) for x in got] == [tuple(x) for x in want]
    only_gb = [GreenButtonSource()]
    assert len(read_meter_file(atom, sources=only_gb)) == len(want)


def test_prefixed_gas_feed_is_recognised_then_refused(tmp_path: Path) -> None:
    atom = prefixed(shared("gas_direct.xml"), tmp_path / "gas.xml")
    assert GreenButtonSource().sniff(atom)
    err = fails(atom)
    assert "no electricity usage point" in err.message


def test_prefixed_feed_is_imported_by_the_node_with_and_without_format(
    tmp_path: Path, node
) -> None:
    # the packaged sample as a producer's feed (reverse flow), written with prefixes
    production = tmp_path / "production.xml"
    production.write_text(
        sample_greenbutton_path()
        .read_text()
        .replace("<flowDirection>1</flowDirection>", "<flowDirection>19</flowDirection>")
    )
    atom = prefixed(production, tmp_path / "prefixed.xml")
    owner = node.create_account(request_id="acct", label="roof").account.id
    node.register_device(
        request_id="dev", local_ref="roof-1", capacity_w=5000, source="solar",
        technology="photovoltaic", commissioned_on="2020-05-01", latitude=6.2, longitude=-75.5,
        zone="CO-ANT", owner=owner, meter_id=UP2, attestation_evidence="agreement 2020/117",
    )  # fmt: skip
    first = node.import_readings(atom, request_id="r1", fmt="greenbutton")
    assert (first.readings, first.wh) == (72, 64_155)
    again = node.import_readings(atom, request_id="r2", fmt="")
    assert (again.readings, again.unchanged) == (0, 72)


def test_sniff_is_by_elements_not_text(tmp_path: Path) -> None:
    # the text "<feed" and both namespaces, but the root is not an Atom feed
    decoy = tmp_path / "decoy.xml"
    decoy.write_text(
        f'<notes xmlns="urn:x"><!-- <feed xmlns="http://www.w3.org/2005/Atom"> {ESPI} --></notes>'
    )
    assert not GreenButtonSource().sniff(decoy)
    # an Atom feed with no ESPI content is some other feed
    blog = tmp_path / "blog.xml"
    blog.write_text('<a:feed xmlns:a="http://www.w3.org/2005/Atom"><a:id>x</a:id></a:feed>')
    assert not GreenButtonSource().sniff(blog)
    # a damaged prefixed feed is still ours, so that read() can say what is wrong
    broken = tmp_path / "broken.xml"
    broken.write_text(
        f'<atom:feed xmlns:atom="http://www.w3.org/2005/Atom" xmlns:espi="{ESPI}">'
        "<atom:entry><atom:content><espi:UsagePoint><oops"
    )
    assert GreenButtonSource().sniff(broken)
    assert "malformed XML" in fails(broken).violations[0].description
    assert not GreenButtonSource().sniff(tmp_path)  # a directory: unreadable, no exception
