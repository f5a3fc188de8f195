import AgoraData
import Foundation
import Testing

/// The installation guide's HTML reduced to the demo corpus's paragraphs.
@Suite struct HTMLTextTests {
  @Test func aDocBookPageBecomesItsParagraphs() {
    let page = """
      <html><head><meta charset="UTF-8"><title>1.1. Τι είναι το Debian;</title><style>p { x: 1 }</style></head>
      <body><div class="navheader"><table><tr><th>1.1. Τι είναι</th></tr><tr><td><a href="ch01.html">Προηγ</a></td></tr></table><hr></div>
      <div class="sect1"><h2 class="title"><a name="x"></a>1.1. Τι είναι το Debian;</h2>
      <p>Το <span class="emphasis"><em>Debian</em></span> είναι ένας
         εθελοντικός οργανισμός &amp; &#947;&#x3B1; &laquo;λέξη&raquo;&nbsp;τέλος.</p>
      <!-- a comment <p>not text</p> -->
      <pre class="screen">d-i debian-installer/locale string en_US</pre>
      <ul><li><p>πρώτο</p></li><li>δεύτερο &unknown; &#xZZ; & τέλος</li></ul></div>
      <div class="navfooter"><hr><table><tr><td>Επόμενο</td></tr></table></div></body></html>
      """
    #expect(HTMLText.paragraphs(page) == [
      "1.1. Τι είναι το Debian;",
      "Το Debian είναι ένας εθελοντικός οργανισμός & γα «λέξη» τέλος.",
      "πρώτο",
      "δεύτερο &unknown; &#xZZ; & τέλος",
    ])
  }

  @Test func untranslatedParagraphsAreRecognised() {
    #expect(HTMLText.untranslated("The netinst CD image is a popular image which can be used to install bookworm with the installer."))
    #expect(HTMLText.untranslated("While booting from USB storage is quite common on UEFI systems, this is somewhat different."))
    // Translations, also ones quoting an English command or sharing short words with English.
    #expect(!HTMLText.untranslated("Το Debian είναι ένας εξ ολοκλήρου εθελοντικός οργανισμός που δημιουργεί the installer."))
    #expect(!HTMLText.untranslated("Het is een vrije software en of je het nu in de installer gebruikt of niet."))
    #expect(!HTMLText.untranslated("Du kan bruge installationsprogrammet for at installere systemet fra en USB-enhed."))
    #expect(!HTMLText.untranslated("the and you"))  // too short to judge
  }
}
